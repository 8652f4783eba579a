"""Run history: every run has an id and a status timeline, kept in storage under ETags."""
from __future__ import annotations

import uuid
from typing import Any

from shared import paths
from shared.clock import iso_now
from shared.errors import NotFound
from shared.storage import AzureStorage

TERMINAL = frozenset({"promoted", "rejected", "pending_approval", "failed", "duplicate"})
_NAMESPACE = uuid.UUID("6f1c3f0e-5b8e-4f55-9d7c-2f0c7a1e9b41")


def run_id_for(*parts: str) -> str:
    """A run id derived from what identifies the work, so a redelivery maps to the same run."""
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def new_run_id() -> str:
    return str(uuid.uuid4())


def record(
    storage: AzureStorage, model: str, run_id: str, status: str, *,
    detail: str | None = None, error: str | None = None, **fields: Any,
) -> dict[str, Any]:
    """Append a status to a run's timeline (creating the run) and merge extra fields."""

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        run = current or {"run_id": run_id, "model": model, "created": iso_now(), "timeline": []}
        entry: dict[str, Any] = {"status": status, "at": iso_now()}
        if detail:
            entry["detail"] = detail
        if error:
            entry["error"] = error
            run["error"] = error
        run["timeline"].append(entry)
        run["status"] = status
        run.update(fields)
        return run

    return storage.update_json(paths.MLOPS, paths.run_record(model, run_id), change)


def get(storage: AzureStorage, model: str, run_id: str) -> dict[str, Any]:
    """A run record. Raises NotFound."""
    try:
        return storage.read_json(paths.MLOPS, paths.run_record(model, run_id))[0]
    except NotFound:
        raise NotFound(f"run (model={model}, run_id={run_id}) not found") from None


def list_runs(storage: AzureStorage, model: str) -> list[dict[str, Any]]:
    """All runs of a model, newest first."""
    runs = [storage.read_json(paths.MLOPS, b.name)[0] for b in storage.list(paths.MLOPS, paths.runs_prefix(model))]
    return sorted(runs, key=lambda r: r.get("created", ""), reverse=True)


def last_error(storage: AzureStorage, model: str, run_id: str) -> str | None:
    """The most recent error recorded on a run's timeline, if any."""
    try:
        run = get(storage, model, run_id)
    except NotFound:
        return None
    errors = [e["error"] for e in run["timeline"] if e.get("error")]
    return errors[-1] if errors else None
