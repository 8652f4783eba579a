"""Turn a verified push into stored specs and training runs, once per delivery."""
from __future__ import annotations

import logging
import uuid
from pathlib import PurePosixPath
from typing import Any

from shared import names, paths, registry, runs
from shared.clock import SYSTEM_CLOCK
from shared.errors import InProgress, InvalidSpec, NotFound, PayloadTooLarge
from shared.git_source import SpecSource, source_from_settings, spec_paths
from shared.lifecycle.claims import Busy, ClaimStore, Done
from shared.lifecycle.records import RunStatus
from shared.messages import GitOrigin, RetrainRequest
from shared.settings import Settings
from shared.spec import name_hint, parse_spec
from shared.storage import Storage
from shared.webhooks import PushEvent

log = logging.getLogger("mlops.git_push")


def spec_source(settings: Settings) -> SpecSource:
    """The configured place specs are read from at a commit."""
    kind = settings.git_source
    if kind == "local":
        return source_from_settings(kind, repo_path_or_file_url=settings.git_local_path)
    if kind == "github":
        return source_from_settings(kind, repository=settings.github_repository, token=settings.github_token,
                                    api_url=settings.github_api_url)
    return source_from_settings(kind, organization_url=settings.ado_org_url, project=settings.ado_project,
                                repository=settings.ado_repository, pat=settings.ado_pat)


def _model_name_of(raw: bytes, path: str) -> str:
    """Model name of an invalid spec for its run record: its valid `name`, else the file stem, else a
    safe stand-in (the name becomes a blob folder)."""
    stem = PurePosixPath(path).stem
    hint = name_hint(raw, path)
    if hint is not None:
        return hint
    return stem if names.is_model_name(stem) else names.safe_segment(stem)


def handle_push(storage: Storage, settings: Settings, event: PushEvent, source: SpecSource) -> dict[str, Any]:
    """Validate and store each touched spec at the pushed commit and request its training.

    A redelivered webhook (same delivery id) is acknowledged and starts nothing new.
    """
    # The delivery id header is not signed: hashed before it names a blob if it is not plain.
    key = f"{event.provider}-{names.delivery_key(event.delivery_id or event.commit)}"
    claims = ClaimStore(storage, SYSTEM_CLOCK)
    got = claims.acquire("delivery", key, owner=uuid.uuid4().hex)
    if isinstance(got, Busy):
        raise InProgress(f"delivery (provider={event.provider}, id={event.delivery_id}) is being handled "
                         "right now; nothing to do")
    if isinstance(got, Done):
        detail = f"delivery {event.delivery_id} was handled before"
        return {"status": "duplicate", "detail": detail, **(got.claim.result or {})}
    try:
        spec_files = spec_paths(source, event, settings.git_specs_folder)
        results = [_handle_spec(storage, event, source, path) for path in spec_files]
    except Exception as exc:
        claims.release(got, f"{type(exc).__name__}: {exc}")
        raise
    outcome = {"status": "accepted", "commit": event.commit, "specs": results}
    claims.complete(got, {"specs": results, "commit": event.commit})
    return outcome


def _handle_spec(storage: Storage, event: PushEvent, source: SpecSource, path: str) -> dict[str, Any]:
    origin = GitOrigin(provider=event.provider, repository=event.repository, ref=event.ref, commit=event.commit,
                       delivery_id=event.delivery_id, pusher=event.pusher, path=path)
    raw = source.read_file(path, event.commit)
    try:
        spec = parse_spec(raw, path)
    except (InvalidSpec, PayloadTooLarge) as exc:
        model = _model_name_of(raw, path)
        run_id = runs.run_id_for("git", event.provider, event.delivery_id or event.commit, path)
        runs.record(storage, SYSTEM_CLOCK, model, run_id, RunStatus.REJECTED,
                    detail=f"spec {path} at {event.commit[:12]} is invalid: {exc.message}",
                    git=origin.to_payload(), validation_errors=exc.details)
        log.warning("git push: spec %s at %s rejected: %s", path, event.commit[:12], exc.message)
        return {"path": path, "model": model, "status": "rejected", "run_id": run_id, "errors": exc.details}
    digest = registry.store_spec(storage, spec, origin=origin.to_payload())
    run_id = runs.run_id_for("git", event.provider, event.delivery_id or event.commit, spec.name)
    try:
        storage.read_json(paths.MLOPS, paths.current_data(spec.name))
    except NotFound:
        runs.record(storage, SYSTEM_CLOCK, spec.name, run_id, RunStatus.WAITING_FOR_DATA, git=origin.to_payload(),
                    spec_hash=digest, detail="spec stored; no data yet: training starts when a dataset is dropped")
        return {"path": path, "model": spec.name, "status": "waiting_for_data", "run_id": run_id, "spec_hash": digest}
    runs.record(storage, SYSTEM_CLOCK, spec.name, run_id, RunStatus.RECEIVED, git=origin.to_payload(), spec_hash=digest,
                detail=f"spec {path} changed at {event.commit[:12]}")
    request = RetrainRequest(model=spec.name, reason=f"git push {event.commit[:12]} to {event.ref}", run_id=run_id,
                             git=origin, spec_hash=digest)
    storage.enqueue(paths.RETRAIN_QUEUE, request.to_payload())
    return {"path": path, "model": spec.name, "status": "queued", "run_id": run_id, "spec_hash": digest}
