"""Model registry in blob storage: specs, versions (atomic numbering), aliases with their history.

Versions are allocated by create-only `versions/<n>.json`; every status change is a transition
of the lifecycle state machine applied under If-Match; champion and previous are derived from an
append-only alias history kept in the same blob (one ETag), so a flip and its history entry can
never disagree. Unlike "max+1 and retry on any error" or last-writer-wins aliases, two concurrent
writers can never both win, and a replayed promotion is a no-op instead of a second flip.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType
from typing import Any

from shared import paths, runs
from shared.clock import Clock, iso_now
from shared.errors import ArtifactCorrupt, BadRequest, Conflict, IllegalTransition, NotFound, Unavailable
from shared.lifecycle.records import (
    ALIAS_NAMES,
    FORMER_CHAMPION,
    AliasAction,
    Aliases,
    ModelVersion,
    Record,
    VersionStatus,
    advance_version,
    desired_statuses,
    migrate_aliases,
    migrate_version,
    predecessor,
    with_change,
)
from shared.spec import TrainingSpec, parse_spec, spec_hash
from shared.storage import Storage

log = logging.getLogger("mlops.registry")
CHAMPION = "champion"
PREVIOUS = "previous"
ATTEMPTS = 20


# -- specs --------------------------------------------------------------------------------------


def store_spec(storage: Storage, spec: TrainingSpec, *, origin: dict[str, Any] | None = None) -> str:
    """Store a validated spec under its content hash and make it the model's current one."""
    digest = spec_hash(spec)
    body = {"spec": json.loads(spec.to_json()), "spec_hash": digest, "stored": iso_now(), "origin": origin}
    storage.create_json(paths.MLOPS, paths.spec_version(spec.name, digest), body)
    storage.write_json(paths.MLOPS, paths.spec_current(spec.name), body)
    storage.update_json(
        paths.MLOPS, paths.model_record(spec.name),
        lambda cur: {**(cur or {"name": spec.name, "created": iso_now()}), "spec_hash": digest,
                     "task": spec.task, "updated": iso_now()},
    )
    return digest


def upload_spec(storage: Storage, data: bytes, filename: str = "spec.yaml", **kwargs: Any) -> tuple[TrainingSpec, str]:
    """Validate spec text and store it. Raises InvalidSpec naming the fields."""
    spec = parse_spec(data, filename)
    return spec, store_spec(storage, spec, **kwargs)


def current_spec(storage: Storage, model: str) -> tuple[TrainingSpec, str]:
    """The model's current spec and its hash. Raises NotFound."""
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_current(model))
    except NotFound:
        raise NotFound(
            f"spec (model={model}) not found: upload one with `mlops upload-spec <file>` or push it to git"
        ) from None
    return parse_spec(json.dumps(body["spec"]), "spec.json"), body["spec_hash"]


def spec_at(storage: Storage, model: str, digest: str) -> TrainingSpec:
    """A stored spec by content hash. Raises NotFound."""
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_version(model, digest))
    except NotFound:
        raise NotFound(f"spec (model={model}, spec_hash={digest}) not found") from None
    return parse_spec(json.dumps(body["spec"]), "spec.json")


# -- models and versions ------------------------------------------------------------------------


class RegisteredModel(Record):
    """A model: its current spec and its aliases."""

    name: str
    created: datetime | None = None
    updated: datetime | None = None
    spec_hash: str | None = None
    task: str | None = None
    aliases: Aliases = Aliases()

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["aliases"] = self.aliases.to_json()
        return body


def list_models(storage: Storage) -> list[RegisteredModel]:
    """Every model with its aliases."""
    out = []
    for blob in storage.list(paths.MLOPS, paths.models_prefix()):
        if blob.name.endswith("/model.json"):
            body, _ = storage.read_json(paths.MLOPS, blob.name)
            out.append(RegisteredModel.model_validate({**body, "aliases": get_aliases(storage, body["name"])[0]}))
    return sorted(out, key=lambda m: m.name)


def model_exists(storage: Storage, model: str) -> bool:
    return storage.exists(paths.MLOPS, paths.model_record(model))


def read_version(storage: Storage, model: str, version: int) -> tuple[ModelVersion, str]:
    """A version record and its ETag. Raises NotFound."""
    try:
        body, etag = storage.read_json(paths.MLOPS, paths.version_record(model, version))
    except NotFound:
        raise NotFound(f"model version (name={model}, version={version}) not found") from None
    return migrate_version(body), etag


def get_version(storage: Storage, model: str, version: int) -> ModelVersion:
    """A version record. Raises NotFound."""
    return read_version(storage, model, version)[0]


def update_version(storage: Storage, model: str, version: int,
                   change: Callable[[ModelVersion], ModelVersion]) -> ModelVersion:
    """Read-modify-write a version under its ETag (retried on a lost race). Raises NotFound."""

    def apply(body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            raise NotFound(f"model version (name={model}, version={version}) not found")
        current = migrate_version(body)
        new = change(current)
        return body if new is current else new.to_json()

    return migrate_version(storage.update_json(paths.MLOPS, paths.version_record(model, version), apply))


def transition(storage: Storage, clock: Clock, model: str, version: int, to: VersionStatus, *,
               by: str = "pipeline", reason: str | None = None, **changes: Any) -> ModelVersion:
    """Apply one lifecycle move to a stored version, then bring its run to the same status.

    Raises IllegalTransition when the state machine refuses the move.
    """
    return move_version(storage, clock, model, version, lambda r: advance_version(
        r, to, at=clock.now(), by=by, reason=reason, **changes), detail=reason)


def move_version(storage: Storage, clock: Clock, model: str, version: int,
                 change: Callable[[ModelVersion], ModelVersion], *, detail: str | None = None) -> ModelVersion:
    """update_version, then the run follows; a crash between the two is finished by the sweeper."""
    pointer = paths.run_follow(model, version)
    marked: list[bool] = []

    def marking(current: ModelVersion) -> ModelVersion:
        new = change(current)
        if new is not current and not marked:  # a real move: marked until the run has followed it
            storage.write_json(paths.MLOPS, pointer, {"model": model, "version": version})
            marked.append(True)
        return new

    record = update_version(storage, model, version, marking)
    runs.follow_version(storage, clock, record, detail=detail)
    if marked:
        storage.delete(paths.MLOPS, pointer)
    return record


def follow_pending(storage: Storage, clock: Clock, *, older_than: float) -> list[str]:
    """Runs left behind their version by a crash: bring them along (the sweeper). Returns what it did."""
    done = []
    for blob in storage.list(paths.MLOPS, paths.run_follow_prefix()):
        age = (clock.now() - blob.last_modified).total_seconds() if blob.last_modified else older_than
        if age < older_than:
            continue  # its own writer is probably still at it
        body, _ = storage.read_json(paths.MLOPS, blob.name)
        try:
            runs.follow_version(storage, clock, get_version(storage, body["model"], int(body["version"])))
        except NotFound:
            pass
        storage.delete(paths.MLOPS, blob.name)
        done.append(f"{body['model']}/{body['version']}")
    return done


def list_versions(storage: Storage, model: str) -> list[ModelVersion]:
    """All versions of a model, oldest first."""
    if not model_exists(storage, model):
        raise NotFound(f"model (name={model}) not found")
    blobs = storage.list(paths.MLOPS, paths.versions_prefix(model))
    return [migrate_version(storage.read_json(paths.MLOPS, b.name)[0]) for b in sorted(blobs, key=lambda b: b.name)]


def read_artifact(storage: Storage, record: ModelVersion, name: str) -> bytes:
    """An artifact's bytes after checking its sha256. Raises ArtifactCorrupt."""
    artifact = record.artifacts.get(name)
    if artifact is None:
        raise ArtifactCorrupt(f"model version (name={record.model}, version={record.version}) has no {name} artifact")
    try:
        data = storage.read(paths.MLOPS, artifact.path).data
    except NotFound:
        raise ArtifactCorrupt(f"artifact (name={name}, path={artifact.path}) of version {record.version} is missing; "
                              "retrain to rebuild it") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise ArtifactCorrupt(f"artifact (name={name}) of version {record.version} fails its sha256 check "
                              f"(recorded {artifact.sha256[:12]}, found {digest[:12]}); it was changed after "
                              "registration: retrain to rebuild it")
    return data


def verify_artifact(storage: Storage, record: ModelVersion, name: str = "onnx") -> str | None:
    """None when the artifact is present with its recorded sha256, else what is wrong."""
    try:
        read_artifact(storage, record, name)
    except ArtifactCorrupt as exc:
        return exc.message
    return None


# -- aliases ------------------------------------------------------------------------------------


def get_aliases(storage: Storage, model: str) -> tuple[Aliases, str | None]:
    """The model's aliases and the ETag they were read at (None when none exist yet)."""
    try:
        body, etag = storage.read_json(paths.MLOPS, paths.aliases(model))
    except NotFound:
        return Aliases(), None
    return migrate_aliases(body), etag


def resolve_alias(storage: Storage, model: str, alias: str = CHAMPION) -> tuple[int, str]:
    """Version behind an alias and the aliases blob's ETag. Raises NotFound / Unavailable."""
    if alias not in ALIAS_NAMES:
        raise NotFound(f"alias (model={model}, alias={alias}) not found; aliases are {', '.join(ALIAS_NAMES)}")
    aliases, etag = get_aliases(storage, model)
    version = aliases.get(alias)
    if version is None or etag is None:
        if not model_exists(storage, model):
            raise NotFound(f"model (name={model}) not found")
        raise Unavailable(f"model (name={model}) has no {alias} yet; train and promote a version first")
    return version, etag


@dataclass(frozen=True)
class AliasOutcome:
    """What a promotion or rollback did: changed=False means it was already so (a replay)."""

    aliases: Aliases
    changed: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"champion": self.aliases.champion, "previous": self.aliases.previous, "changed": self.changed,
                "message": self.message}


def _write_aliases(storage: Storage, model: str, aliases: Aliases, etag: str | None) -> str:
    path = paths.aliases(model)
    if etag is None:
        return storage.write_json(paths.MLOPS, path, aliases.to_json(), create_only=True)
    return storage.write_json(paths.MLOPS, path, aliases.to_json(), if_match=etag)


class ChampionMoved(Conflict):
    """The champion changed since a decision was made against it: decide again."""

    code = "CHAMPION_MOVED"


def promote(storage: Storage, clock: Clock, model: str, version: int, *, action: AliasAction, by: str,
            reason: str, run_id: str | None = None, expected: int | None | EllipsisType = ...) -> AliasOutcome:
    """Make `version` the champion; a no-op when it already is (so replays and parallel calls are safe).

    With `expected`, only while the champion is still that version (None: no champion yet).
    Raises ChampionMoved otherwise.
    """
    for _ in range(ATTEMPTS):
        aliases, etag = get_aliases(storage, model)
        if aliases.champion == version:
            sync_statuses(storage, clock, model, full=not aliases.synced)
            return AliasOutcome(aliases, False, f"version {version} is already the champion; nothing changed")
        if expected is not ... and aliases.champion != expected:
            raise ChampionMoved(f"model (name={model}) champion is now version {aliases.champion}, not {expected}")
        new = with_change(aliases, action, version, at=clock.now(), by=by, reason=reason, run_id=run_id)
        try:
            _write_aliases(storage, model, new, etag)
        except Conflict:
            continue  # someone flipped first: look again (maybe they made it champion already)
        sync_statuses(storage, clock, model, full=not aliases.synced)
        log.info("registry: model=%s champion %s -> %s (%s by %s)", model, aliases.champion, version, action, by)
        return AliasOutcome(new, True, f"version {version} is the champion (previous: {new.previous})")
    raise Conflict(f"aliases of model (name={model}) kept changing; try again")


def rollback(storage: Storage, clock: Clock, model: str, *, expected_from: int | None = None, to: int | None = None,
             by: str = "admin", reason: str = "rollback") -> AliasOutcome:
    """Make a former champion the champion again, only if the champion is still `expected_from`.

    Defaults: from = the current champion, to = the champion before `from` in the history (so a
    retried "back from N" always means the same target). Already at `to` -> no change. Raises
    Conflict (champion moved on, or the target's artifact fails its sha256 check), BadRequest
    (nothing to roll back to), NotFound.
    """
    for _ in range(ATTEMPTS):
        aliases, etag = get_aliases(storage, model)
        current = _current_champion(storage, model, aliases)
        target = _rollback_target(aliases, expected_from, to)
        if target is not None and current == target:
            return AliasOutcome(aliases, False, f"version {target} is already the champion; nothing changed")
        if expected_from is not None and current != expected_from:
            raise Conflict(f"model (name={model}) champion is version {current}, not {expected_from}; "
                           "read the aliases and decide again", details=aliases.to_json())
        if target is None:
            raise BadRequest(f"model (name={model}) has no previous champion to roll back to; pass \"to\"")
        _check_rollback_target(storage, model, target)
        new = with_change(aliases, AliasAction.ROLLBACK, target, at=clock.now(), by=by, reason=reason)
        try:
            _write_aliases(storage, model, new, etag)
        except Conflict:
            continue
        sync_statuses(storage, clock, model, full=not aliases.synced)
        log.info("registry: model=%s rolled back %s -> %s by %s", model, current, target, by)
        return AliasOutcome(new, True, f"rolled back from version {current} to version {target}")
    raise Conflict(f"aliases of model (name={model}) kept changing; try again")


def _current_champion(storage: Storage, model: str, aliases: Aliases) -> int:
    if aliases.champion is None:
        if not model_exists(storage, model):
            raise NotFound(f"model (name={model}) not found")
        raise BadRequest(f"model (name={model}) has no champion to roll back from")
    return aliases.champion


def _rollback_target(aliases: Aliases, expected_from: int | None, to: int | None) -> int | None:
    if to is not None:
        return to
    if expected_from is not None:  # "back from N": the same target however often it is retried
        return predecessor(aliases.history, expected_from)
    return aliases.previous


def _check_rollback_target(storage: Storage, model: str, target: int) -> None:
    record = get_version(storage, model, target)
    if record.status not in FORMER_CHAMPION:
        raise Conflict(f"model version (name={model}, version={target}) is {record.status}; only a former "
                       "champion (superseded or rolled_back) can be rolled back to")
    problem = verify_artifact(storage, record)
    if problem:
        raise Conflict(f"cannot roll back to version {target}: {problem}")


def sync_statuses(storage: Storage, clock: Clock, model: str, *, full: bool = True) -> bool:
    """Bring the versions the alias history names to their status (promoted / superseded / rolled_back).

    Idempotent; called after each flip (full=False: only the last change's versions, when the
    flip before it was synced) and by the sweeper for a flip a crash left unsynced.
    Returns True when the aliases are marked synced.
    """
    aliases, etag = get_aliases(storage, model)
    if etag is None:
        return True
    desired = desired_statuses(aliases)
    if not full and aliases.history:
        last = aliases.history[-1]
        desired = {v: s for v, s in desired.items() if v in (last.from_version, last.to_version)}
    for version, status in desired.items():
        try:
            transition(storage, clock, model, version, status, by="registry",
                       reason=_sync_reason(aliases, version, status))
        except (IllegalTransition, NotFound) as exc:  # a record the history cannot explain: report, go on
            log.error("registry: model=%s version=%s cannot become %s: %s", model, version, status, exc.message)
    if aliases.synced:
        return True
    try:
        _write_aliases(storage, model, aliases.model_copy(update={"synced": True}), etag)
        return True
    except Conflict:
        return False  # flipped again meanwhile; that flip syncs itself


def _sync_reason(aliases: Aliases, version: int, status: VersionStatus) -> str:
    for change in reversed(aliases.history):
        if status == VersionStatus.PROMOTED and change.to_version == version:
            return f"{change.action} by {change.by}: {change.reason}"
        if change.from_version == version:
            return f"replaced by version {change.to_version} ({change.action} by {change.by})"
    return "alias history"
