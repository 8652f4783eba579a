"""Stored lifecycle records, their status vocabularies and the transitions between statuses.

Every change of status is `advance(record, to, ...) -> record`: a move the table allows returns a
new record (with the change appended to its history), a replay of where the record already is
returns it unchanged (every trigger may fire twice), anything else raises IllegalTransition.
Records keep unknown fields (extra="allow") so JSON written by older versions stays readable.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import IllegalTransition


class Record(BaseModel):
    """Base of the stored records: frozen, unknown (older or newer) fields kept as they are."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form written to storage and answered by the API."""
        return self.model_dump(mode="json", exclude_none=True)


# -- versions -----------------------------------------------------------------------------------


class VersionStatus(StrEnum):
    """Where a model version is in its life; see VERSION_MOVES for the allowed moves."""

    TRAINING = "training"
    TRAINED = "trained"
    EXPORTED = "exported"
    PENDING_APPROVAL = "pending_approval"
    PROMOTED = "promoted"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    FAILED = "failed"


V = VersionStatus
VERSION_MOVES: dict[VersionStatus, frozenset[VersionStatus]] = {
    V.TRAINING: frozenset({V.TRAINED, V.REJECTED, V.FAILED}),
    V.TRAINED: frozenset({V.EXPORTED, V.REJECTED, V.FAILED}),
    V.EXPORTED: frozenset({V.PROMOTED, V.PENDING_APPROVAL, V.REJECTED, V.FAILED}),
    V.PENDING_APPROVAL: frozenset({V.PROMOTED, V.REJECTED}),
    V.PROMOTED: frozenset({V.SUPERSEDED, V.ROLLED_BACK}),
    V.SUPERSEDED: frozenset({V.PROMOTED}),
    V.ROLLED_BACK: frozenset({V.PROMOTED}),
    V.REJECTED: frozenset(),
    V.FAILED: frozenset(),
}
# The pipeline is done with a version in these (it may still be approved, superseded, rolled back).
SETTLED_VERSION = frozenset({V.PENDING_APPROVAL, V.PROMOTED, V.SUPERSEDED, V.ROLLED_BACK, V.REJECTED, V.FAILED})
# Statuses of a version that has been the champion and may be again (rollback targets).
FORMER_CHAMPION = frozenset({V.SUPERSEDED, V.ROLLED_BACK})


class StatusChange(Record):
    """One entry of a record's status history."""

    status: str
    at: datetime
    by: str = "pipeline"
    reason: str | None = None
    from_status: str | None = Field(default=None, alias="from")

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class Artifact(Record):
    """A stored file of a version and the sha256 it must still have."""

    path: str
    sha256: str


class ModelVersion(Record):
    """A candidate or released model: what it was trained on, how it scored, where it stands."""

    model: str
    version: int
    status: VersionStatus
    created: datetime
    status_at: datetime | None = None
    run_id: str | None = None
    key: str | None = None  # what identifies its training: <data hash>/<spec hash>
    task: str | None = None
    classes: list[Any] | None = None
    lineage: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    parity: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None
    latency: dict[str, float] | None = None
    decision: dict[str, Any] | None = None
    holdout_outputs: dict[str, Any] | None = None  # the model's outputs on its holdout: prediction drift's baseline
    signature: dict[str, Any] | None = None  # its scoring contract (shared.contract), fixed at validation
    history: list[StatusChange] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["history"] = [h.to_json() for h in self.history]
        return body


def advance_version(record: ModelVersion, to: VersionStatus, *, at: datetime, by: str = "pipeline",
                    reason: str | None = None, **changes: Any) -> ModelVersion:
    """Move a version to `to` (merging `changes`); a replay returns it unchanged.

    Raises IllegalTransition for a move VERSION_MOVES does not allow.
    """
    if record.status == to:
        return record
    if to not in VERSION_MOVES[record.status]:
        raise IllegalTransition(
            f"model version (name={record.model}, version={record.version}) is {record.status}; "
            f"it cannot become {to}",
            details={"status": record.status, "allowed": sorted(VERSION_MOVES[record.status])})
    entry = StatusChange(status=to, at=at, by=by, reason=reason, from_status=record.status)
    return record.model_copy(update={**changes, "status": to, "status_at": at, "history": [*record.history, entry]})


def migrate_version(body: dict[str, Any]) -> ModelVersion:
    """A version record from storage, whatever shape an older release wrote."""
    body = dict(body)
    artifacts = body.get("artifacts") or {}
    body["artifacts"] = {k: v for k, v in artifacts.items() if isinstance(v, dict) and "path" in v and "sha256" in v}
    body.setdefault("status", VersionStatus.TRAINING)
    body.setdefault("created", body.get("trained_at") or "1970-01-01T00:00:00+00:00")
    return ModelVersion.model_validate(body)


# -- aliases ------------------------------------------------------------------------------------


class AliasAction(StrEnum):
    """Why the champion changed."""

    PROMOTE = "promote"  # validation passed with approval=auto
    APPROVE = "approve"  # a reviewer approved a pending version
    ROLLBACK = "rollback"  # back to a former champion


class AliasChange(Record):
    """One entry of a model's append-only alias history."""

    seq: int
    action: AliasAction
    from_version: int | None = None
    to_version: int
    at: datetime
    by: str
    reason: str
    run_id: str | None = None


class Aliases(Record):
    """champion and previous of one model, derived from its alias history (one blob, one ETag)."""

    champion: int | None = None
    previous: int | None = None
    history: list[AliasChange] = Field(default_factory=list)
    synced: bool = True  # False between a flip and the status updates of the versions it moved
    updated: datetime | None = None

    def get(self, alias: str) -> int | None:
        """The version behind a named alias (champion, previous), None when unset."""
        return {"champion": self.champion, "previous": self.previous}.get(alias)

    def to_json(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_none=True)
        body["history"] = [h.to_json() for h in self.history]
        return body


ALIAS_NAMES = ("champion", "previous")


def champion_stack(history: list[AliasChange]) -> list[int]:
    """The chain of champions the history leaves, oldest first; each version at most once.

    A promotion pushes; a rollback to a version in the chain drops everything after it (so a
    second rollback goes one step further back, never toggles); a rollback to a version no
    longer in the chain pushes it like a promotion (rolling forward again).
    """
    stack: list[int] = []
    for change in history:
        if change.action == AliasAction.ROLLBACK and change.to_version in stack:
            del stack[stack.index(change.to_version) + 1:]
        else:
            if change.to_version in stack:
                stack.remove(change.to_version)
            stack.append(change.to_version)
    return stack


def predecessor(history: list[AliasChange], version: int) -> int | None:
    """The champion before `version` when `version` was last made champion (a rollback's default target)."""
    last = max((i for i, c in enumerate(history) if c.to_version == version), default=None)
    if last is None:
        return None
    stack = champion_stack(history[:last + 1])
    return stack[-2] if len(stack) > 1 else None


def with_change(aliases: Aliases, action: AliasAction, to: int, *, at: datetime, by: str, reason: str,
                run_id: str | None = None) -> Aliases:
    """Aliases after appending one change; champion and previous re-derived from the history.

    Raises IllegalTransition when `to` is already the champion (a flip to itself would lose previous).
    """
    if aliases.champion == to:
        raise IllegalTransition(f"version {to} is already the champion")
    change = AliasChange(seq=len(aliases.history) + 1, action=action, from_version=aliases.champion, to_version=to,
                         at=at, by=by, reason=reason, run_id=run_id)
    history = [*aliases.history, change]
    stack = champion_stack(history)
    return Aliases(champion=stack[-1], previous=stack[-2] if len(stack) > 1 else None, history=history,
                   synced=False, updated=at)


def desired_statuses(aliases: Aliases) -> dict[int, VersionStatus]:
    """The status every version named in the history must have: promoted, superseded or rolled_back."""
    desired: dict[int, VersionStatus] = {}
    for change in aliases.history:
        if change.from_version is not None:
            rolled = change.action == AliasAction.ROLLBACK
            desired[change.from_version] = VersionStatus.ROLLED_BACK if rolled else VersionStatus.SUPERSEDED
        desired[change.to_version] = VersionStatus.PROMOTED
    if aliases.champion is not None:
        desired[aliases.champion] = VersionStatus.PROMOTED
    return desired


def migrate_aliases(body: dict[str, Any]) -> Aliases:
    """Aliases from storage; a record without history (older release) gets one synthesised."""
    if "history" in body or "champion" not in body:
        return Aliases.model_validate(body)
    at = datetime.fromisoformat(str(body.get("updated") or "1970-01-01T00:00:00+00:00"))
    history: list[AliasChange] = []
    if body.get("previous") is not None:
        history.append(AliasChange(seq=1, action=AliasAction.PROMOTE, from_version=None,
                                   to_version=int(body["previous"]), at=at, by="migration", reason="before history"))
    history.append(AliasChange(seq=len(history) + 1, action=AliasAction.PROMOTE,
                               from_version=history[-1].to_version if history else None,
                               to_version=int(body["champion"]), at=at, by="migration", reason="before history"))
    stack = champion_stack(history)
    return Aliases(champion=stack[-1], previous=stack[-2] if len(stack) > 1 else None, history=history, updated=at)


# -- runs ---------------------------------------------------------------------------------------


class RunStatus(StrEnum):
    """Where a run is; once it has a version, its final status is the version's status."""

    RECEIVED = "received"
    QUEUED = "queued"
    PREPARED = "prepared"
    TRAINED = "trained"
    EXPORTED = "exported"
    PENDING_APPROVAL = "pending_approval"
    PROMOTED = "promoted"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    WAITING_FOR_DATA = "waiting_for_data"


R = RunStatus
# Progress before the version settles; moving "back" to an earlier step is a replay, not a move.
RUN_PROGRESS = (R.RECEIVED, R.QUEUED, R.PREPARED, R.TRAINED, R.EXPORTED)
RUN_FINAL = frozenset({R.REJECTED, R.FAILED, R.DUPLICATE, R.WAITING_FOR_DATA})
RUN_SETTLED = frozenset({*RUN_FINAL, R.PENDING_APPROVAL, R.PROMOTED, R.SUPERSEDED, R.ROLLED_BACK})
_AFTER_SETTLED: dict[RunStatus, frozenset[RunStatus]] = {  # the version's own moves, mirrored
    R.PENDING_APPROVAL: frozenset({R.PROMOTED, R.REJECTED}),
    R.PROMOTED: frozenset({R.SUPERSEDED, R.ROLLED_BACK}),
    R.SUPERSEDED: frozenset({R.PROMOTED}),
    R.ROLLED_BACK: frozenset({R.PROMOTED}),
}


class Attempt(Record):
    """A failed try of one stage: what was raised, so the poison handler can tell the real reason."""

    stage: str
    attempt: int
    error_type: str
    error: str
    at: datetime
    transient: bool = True


class RunEvent(Record):
    """One entry of a run's timeline."""

    status: str
    at: datetime
    detail: str | None = None
    error: str | None = None


class RunRecord(Record):
    """One pass of the pipeline (a drop, a retrain, a push): its status timeline and its version."""

    run_id: str
    model: str
    created: datetime
    status: RunStatus = RunStatus.RECEIVED
    version: int | None = None
    error: str | None = None
    timeline: list[RunEvent] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["timeline"] = [e.to_json() for e in self.timeline]
        body["attempts"] = [a.to_json() for a in self.attempts]
        return body


def run_move_allowed(current: RunStatus, to: RunStatus) -> bool | None:
    """True: a real move; None: a replay (already there or past it); False: illegal."""
    if current == to:
        return None
    if to in RUN_PROGRESS:
        if current in RUN_SETTLED or RUN_PROGRESS.index(to) < RUN_PROGRESS.index(current):
            return None  # e.g. a redelivered drop records "received" again on a finished run
        return True
    if current in RUN_PROGRESS:
        return True
    return to in _AFTER_SETTLED.get(current, frozenset())


def advance_run(run: RunRecord, to: RunStatus, *, at: datetime, detail: str | None = None,
                error: str | None = None, **changes: Any) -> RunRecord:
    """Move a run to `to`, appending to its timeline; a replay only merges new facts.

    An error belongs to a failed or rejected run only: any other status clears it.
    Raises IllegalTransition for a move the table does not allow.
    """
    allowed = run_move_allowed(run.status, to)
    if allowed is False:
        raise IllegalTransition(f"run (model={run.model}, run_id={run.run_id}) is {run.status}; it cannot become {to}")
    if allowed is None:
        fresh = {k: v for k, v in changes.items() if getattr(run, k, None) is None}
        return run.model_copy(update=fresh) if fresh else run
    keep_error = to in (R.FAILED, R.REJECTED)
    event = RunEvent(status=to, at=at, detail=detail, error=error)
    return run.model_copy(update={**changes, "status": to, "timeline": [*run.timeline, event],
                                  "error": (error or run.error) if keep_error else None})


def migrate_run(body: dict[str, Any]) -> RunRecord:
    """A run record from storage; statuses an older release wrote map onto today's vocabulary."""
    body = dict(body)
    legacy = {"retrying": None, "validated": RunStatus.EXPORTED}
    if body.get("status") in legacy:
        fallback = legacy[body["status"]]
        known = set(RunStatus) - set(legacy)
        steps = [e.get("status") for e in body.get("timeline") or [] if e.get("status") in known]
        body["status"] = fallback or (steps[-1] if steps else RunStatus.RECEIVED)
    body.setdefault("created", "1970-01-01T00:00:00+00:00")
    return RunRecord.model_validate(body)
