"""Idempotent stages: a create-only marker moves in_progress -> completed for each unit of work.

A duplicate delivery that finds `completed` gets the recorded result and does nothing; one that
finds a fresh `in_progress` raises InProgress so the host retries it later; a stale `in_progress`
(its worker died) is taken over under the marker's ETag.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import paths
from shared.clock import iso_now, utc_now
from shared.errors import Conflict, InProgress, NotFound
from shared.storage import AzureStorage


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming a unit of work."""

    acquired: bool
    result: dict[str, Any] | None  # the recorded result when the work was already completed
    notes: dict[str, Any] | None = None  # what an earlier, failed holder noted (e.g. its version)


def claim(storage: AzureStorage, stage: str, key: str, *, stale_after: timedelta = timedelta(minutes=15)) -> Claim:
    """Claim (stage, key). Raises InProgress if another delivery is working on it right now."""
    path = paths.idempotency_marker(stage, key)
    marker = {"state": "in_progress", "started": iso_now()}
    if storage.create_json(paths.MLOPS, path, marker):
        return Claim(acquired=True, result=None)
    try:
        current, etag = storage.read_json(paths.MLOPS, path)
    except NotFound:
        return claim(storage, stage, key, stale_after=stale_after)
    if current["state"] == "completed":
        return Claim(acquired=False, result=current.get("result") or {})
    started = datetime.fromisoformat(current["started"])
    if utc_now() - started < stale_after:
        raise InProgress(f"work (stage={stage}, key={key}) is in progress since {current['started']}; retry later")
    notes = current.get("notes") or {}
    try:
        storage.write_json(paths.MLOPS, path, {**marker, "notes": notes}, if_match=etag)
    except Conflict:
        raise InProgress(f"work (stage={stage}, key={key}) was just taken over by another delivery") from None
    return Claim(acquired=True, result=None, notes=notes)


def note(storage: AzureStorage, stage: str, key: str, **fields: Any) -> None:
    """Record facts on an in-progress claim that a retry must reuse (e.g. an allocated version)."""
    storage.update_json(
        paths.MLOPS, paths.idempotency_marker(stage, key),
        lambda cur: {**(cur or {}), "notes": {**((cur or {}).get("notes") or {}), **fields}},
    )


def complete(storage: AzureStorage, stage: str, key: str, result: dict[str, Any]) -> None:
    """Mark (stage, key) completed with its result."""
    storage.write_json(
        paths.MLOPS, paths.idempotency_marker(stage, key),
        {"state": "completed", "completed": iso_now(), "result": result},
    )


def release(storage: AzureStorage, stage: str, key: str) -> None:
    """Forget an in-progress claim after a failure so the retry can claim it at once."""
    path = paths.idempotency_marker(stage, key)
    try:
        current, etag = storage.read_json(paths.MLOPS, path)
    except NotFound:
        return
    if current.get("state") == "in_progress":
        # Overwrite with an already-stale marker rather than deleting: we never delete state.
        stale = {**current, "started": "1970-01-01T00:00:00+00:00", "released": iso_now()}
        try:
            storage.write_json(paths.MLOPS, path, stale, if_match=etag)
        except Conflict:
            pass
