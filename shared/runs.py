"""Run history: every run has an id, a typed status and a timeline, kept in storage under ETags.

A run's status moves only by `advance_run` (records.py): forward through the pipeline, then
with its version. Failed tries are kept as attempts, not as statuses, so a run never ends
"retrying" and an error never sticks to a run that succeeded.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from shared import paths
from shared.clock import Clock
from shared.errors import IllegalTransition, NotFound
from shared.lifecycle.records import (
    Attempt,
    ModelVersion,
    RunEvent,
    RunRecord,
    RunStatus,
    VersionStatus,
    advance_run,
    migrate_run,
)
from shared.storage import Storage

log = logging.getLogger("mlops.runs")
_NAMESPACE = uuid.UUID("6f1c3f0e-5b8e-4f55-9d7c-2f0c7a1e9b41")


def run_id_for(*parts: str) -> str:
    """A run id derived from what identifies the work, so a redelivery maps to the same run."""
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def new_run_id() -> str:
    return str(uuid.uuid4())


def _update(storage: Storage, model: str, run_id: str, change: Callable[[RunRecord | None], RunRecord]) -> RunRecord:
    """Read-modify-write a run under its ETag (storage.update_json); a replay writes nothing."""

    def apply(body: dict[str, Any] | None) -> dict[str, Any]:
        current = migrate_run(body) if body is not None else None
        new = change(current)
        return body if body is not None and new is current else new.to_json()

    return migrate_run(storage.update_json(paths.MLOPS, paths.run_record(model, run_id), apply))


def record(storage: Storage, clock: Clock, model: str, run_id: str, status: RunStatus, *,
           detail: str | None = None, error: str | None = None, **fields: Any) -> RunRecord:
    """Move a run to `status` (creating it), merging extra facts. Raises IllegalTransition."""
    def change(run: RunRecord | None) -> RunRecord:
        if run is None:  # the first status of a new run is its first timeline entry
            event = RunEvent(status=status, at=clock.now(), detail=detail, error=error)
            return RunRecord(run_id=run_id, model=model, created=clock.now(), status=status, timeline=[event],
                             error=error if status in (RunStatus.FAILED, RunStatus.REJECTED) else None, **fields)
        return advance_run(run, status, at=clock.now(), detail=detail, error=error, **fields)

    return _update(storage, model, run_id, change)


def add_attempt(storage: Storage, clock: Clock, model: str, run_id: str, stage: str, attempt: int,
                exc: BaseException, *, transient: bool) -> RunRecord:
    """Keep a failed try on the run (type and message); its status does not change."""
    message = getattr(exc, "message", None) or str(exc)
    entry = Attempt(stage=stage, attempt=attempt, error_type=type(exc).__name__, error=message, at=clock.now(),
                    transient=transient)
    def change(run: RunRecord | None) -> RunRecord:
        run = run or RunRecord(run_id=run_id, model=model, created=clock.now())
        return run.model_copy(update={"attempts": [*run.attempts, entry][-20:]})

    return _update(storage, model, run_id, change)


def follow_version(storage: Storage, clock: Clock, version: ModelVersion, *, detail: str | None = None) -> None:
    """Bring the run that made a version to the version's status (run history agrees with the registry)."""
    if not version.run_id or version.status == VersionStatus.TRAINING:
        return  # training: the run is still at its own pipeline step
    status = RunStatus(version.status.value)  # every other version status is also a run status
    try:
        record(storage, clock, version.model, version.run_id, status, detail=detail, version=version.version,
               error=_version_error(version))
    except IllegalTransition as exc:  # the registry is the truth; say loudly that the run could not follow
        log.error("run (model=%s, run_id=%s) cannot follow version %s to %s: %s", version.model, version.run_id,
                  version.version, status, exc.message)


def _version_error(version: ModelVersion) -> str | None:
    decision = version.decision or {}
    if version.status.value in ("rejected", "failed"):
        reasons = [r for r in decision.get("reasons") or [] if str(r).startswith("rejected")]
        return "; ".join(reasons) or decision.get("error")
    return None


def get(storage: Storage, model: str, run_id: str) -> RunRecord:
    """A run record. Raises NotFound."""
    try:
        return migrate_run(storage.read_json(paths.MLOPS, paths.run_record(model, run_id))[0])
    except NotFound:
        raise NotFound(f"run (model={model}, run_id={run_id}) not found") from None


def list_runs(storage: Storage, model: str) -> list[RunRecord]:
    """All runs of a model, newest first."""
    found = [migrate_run(storage.read_json(paths.MLOPS, b.name)[0])
             for b in storage.list(paths.MLOPS, paths.runs_prefix(model)) if b.name.endswith(".json")]
    return sorted(found, key=lambda r: r.created, reverse=True)


def last_error(run: RunRecord) -> str | None:
    """The real last exception of a run's failed tries (type: message), if any."""
    if not run.attempts:
        return None
    last = run.attempts[-1]
    return f"{last.stage} attempt {last.attempt}: {last.error_type}: {last.error}"
