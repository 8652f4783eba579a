"""Model registry in blob storage: specs, versions (atomic numbering), aliases (ETag flips).

Versions are allocated by create-only `versions/<n>.json` with a retry on conflict, and aliases
are flipped with If-Match; unlike "max+1 and retry on any error" or last-writer-wins aliases, two
concurrent writers can never both win.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from shared import paths
from shared.clock import iso_now
from shared.errors import BadRequest, Conflict, NotFound, Unavailable
from shared.spec import TrainingSpec, parse_spec, spec_hash
from shared.storage import AzureStorage

CHAMPION = "champion"
PREVIOUS = "previous"


# -- specs --------------------------------------------------------------------------------------


def store_spec(
    storage: AzureStorage, spec: TrainingSpec, *, origin: dict[str, Any] | None = None,
) -> str:
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


def upload_spec(storage: AzureStorage, data: bytes, filename: str = "spec.yaml", **kwargs: Any) -> tuple[TrainingSpec, str]:
    """Validate spec text and store it. Raises InvalidSpec naming the fields."""
    spec = parse_spec(data, filename)
    return spec, store_spec(storage, spec, **kwargs)


def current_spec(storage: AzureStorage, model: str) -> tuple[TrainingSpec, str]:
    """The model's current spec and its hash. Raises NotFound."""
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_current(model))
    except NotFound:
        raise NotFound(
            f"spec (model={model}) not found: upload one with `python -m shared.cli upload-spec` or push it to git"
        ) from None
    return parse_spec(json.dumps(body["spec"]), "spec.json"), body["spec_hash"]


def spec_at(storage: AzureStorage, model: str, digest: str) -> TrainingSpec:
    """A stored spec by content hash. Raises NotFound."""
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_version(model, digest))
    except NotFound:
        raise NotFound(f"spec (model={model}, spec_hash={digest}) not found") from None
    return parse_spec(json.dumps(body["spec"]), "spec.json")


# -- models and versions ------------------------------------------------------------------------


def list_models(storage: AzureStorage) -> list[dict[str, Any]]:
    """Every model with its record and aliases."""
    out = []
    for blob in storage.list(paths.MLOPS, paths.models_prefix()):
        if blob.name.endswith("/model.json"):
            record, _ = storage.read_json(paths.MLOPS, blob.name)
            record["aliases"] = get_aliases(storage, record["name"])[0]
            out.append(record)
    return sorted(out, key=lambda r: r["name"])


def model_exists(storage: AzureStorage, model: str) -> bool:
    return storage.exists(paths.MLOPS, paths.model_record(model))


def allocate_version(storage: AzureStorage, model: str, record: dict[str, Any]) -> int:
    """Create the next version number for a model atomically (create-only, retry on conflict)."""
    existing = storage.list(paths.MLOPS, paths.versions_prefix(model))
    n = len(existing) + 1
    for _ in range(1000):
        body = {**record, "model": model, "version": n, "created": iso_now()}
        if storage.create_json(paths.MLOPS, paths.version_record(model, n), body):
            return n
        n += 1
    raise Conflict(f"could not allocate a version for model (name={model})")


def get_version(storage: AzureStorage, model: str, version: int) -> dict[str, Any]:
    """A version record. Raises NotFound."""
    try:
        return storage.read_json(paths.MLOPS, paths.version_record(model, version))[0]
    except NotFound:
        raise NotFound(f"model version (name={model}, version={version}) not found") from None


def update_version(
    storage: AzureStorage, model: str, version: int, change: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Read-modify-write a version record under its ETag."""

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None:
            raise NotFound(f"model version (name={model}, version={version}) not found")
        return change(dict(current))

    return storage.update_json(paths.MLOPS, paths.version_record(model, version), apply)


def list_versions(storage: AzureStorage, model: str) -> list[dict[str, Any]]:
    """All versions of a model, oldest first."""
    if not model_exists(storage, model):
        raise NotFound(f"model (name={model}) not found")
    blobs = storage.list(paths.MLOPS, paths.versions_prefix(model))
    return [storage.read_json(paths.MLOPS, b.name)[0] for b in sorted(blobs, key=lambda b: b.name)]


# -- aliases ------------------------------------------------------------------------------------


def get_aliases(storage: AzureStorage, model: str) -> tuple[dict[str, int], str | None]:
    """The model's aliases and the ETag they were read at (None when none exist yet)."""
    try:
        body, etag = storage.read_json(paths.MLOPS, paths.aliases(model))
        return body, etag
    except NotFound:
        return {}, None


def resolve_alias(storage: AzureStorage, model: str, alias: str = CHAMPION) -> tuple[int, str]:
    """Version behind an alias and the aliases blob's ETag. Raises NotFound / Unavailable."""
    aliases, etag = get_aliases(storage, model)
    if alias not in aliases:
        if not model_exists(storage, model):
            raise NotFound(f"model (name={model}) not found")
        raise Unavailable(f"model (name={model}) has no {alias} yet; train and promote a version first")
    assert etag is not None
    return int(aliases[alias]), etag


@dataclass(frozen=True)
class AliasFlip:
    """What a promotion or rollback changed."""

    champion: int
    previous: int | None


def set_champion(storage: AzureStorage, model: str, version: int, *, expected_etag: str | None) -> AliasFlip:
    """Make `version` the champion if the aliases are still at `expected_etag`.

    Raises Conflict when someone else flipped them first: the caller re-reads and decides again.
    """
    aliases, etag = get_aliases(storage, model)
    if etag != expected_etag:
        raise Conflict(f"aliases of model (name={model}) changed since they were read; decide again")
    new = dict(aliases)
    if CHAMPION in aliases:
        new[PREVIOUS] = aliases[CHAMPION]
    new[CHAMPION] = version
    new["updated"] = iso_now()
    if etag is None:
        storage.write_json(paths.MLOPS, paths.aliases(model), new, create_only=True)
    else:
        storage.write_json(paths.MLOPS, paths.aliases(model), new, if_match=etag)
    return AliasFlip(champion=version, previous=new.get(PREVIOUS))


def rollback(storage: AzureStorage, model: str) -> AliasFlip:
    """Swap champion and previous under the aliases' ETag. Raises BadRequest if no previous."""
    aliases, etag = get_aliases(storage, model)
    if PREVIOUS not in aliases:
        if not model_exists(storage, model):
            raise NotFound(f"model (name={model}) not found")
        raise BadRequest(f"model (name={model}) has no previous champion to roll back to")
    new = {CHAMPION: aliases[PREVIOUS], PREVIOUS: aliases[CHAMPION], "updated": iso_now()}
    storage.write_json(paths.MLOPS, paths.aliases(model), new, if_match=etag)
    for version, status in ((aliases[CHAMPION], "rolled_back"), (aliases[PREVIOUS], "promoted")):
        update_version(storage, model, int(version), lambda r, s=status: {**r, "status": s, "status_at": iso_now()})
    return AliasFlip(champion=int(aliases[PREVIOUS]), previous=int(aliases[CHAMPION]))
