"""The model pages' index: what a page needs of each listed record, kept by ETag in the process and in storage.

A page shows every version of a model (timeline, metrics chart) and its newest runs. Read one record at
a time that is a storage round trip each (about 4 ms on Azurite, 100 versions: 400 ms). Instead each
listing a page shows has a page index blob (paths.page_index): for every listed blob, the ETag it was
read at and what the pages need of it (a VersionSummary of a version, the record of a run). A page lists
the blobs, takes each entry whose ETag still matches the listing, reads only the records written since
(READERS at a time) and writes the index back under If-Match when it missed (losing that race leaves the
refresh to the next view). The listing stays the truth: an entry is used only at the ETag it was derived
from, so no writer has to know about the index, and a deleted or unreadable index is rebuilt by the next
view. Within a process RecordCache keeps the same entries, so a repeat view reads neither index nor records.
"""
from __future__ import annotations

import json
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from pydantic import Field

from shared import paths
from shared.errors import Conflict, NotFound
from shared.lifecycle.records import ModelVersion, Record, StatusChange, VersionStatus, migrate_version
from shared.storage import BlobInfo, Storage

FORMAT = 1  # of the index blob and its entries: another value is rebuilt, never read
READERS = 16  # records read at once
CACHE_ENTRIES = 5_000  # entries kept per storage gateway (summaries and runs: well under a KiB each)
METRIC_SOURCES = ("onnx_holdout", "sklearn_holdout")  # the holdout metrics a page charts, in order of preference

Derive = Callable[[dict[str, Any]], dict[str, Any]]


class VersionSummary(Record):
    """What the timeline, the metrics chart and the models list show of a version (an entry of its page index)."""

    model: str
    version: int
    status: VersionStatus
    created: datetime
    status_at: datetime | None = None
    task: str | None = None
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)  # METRIC_SOURCES -> finite numeric metrics
    data_hash: str | None = None  # lineage: what a monitoring report's training profile is found by
    last_change: StatusChange | None = None

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        if self.last_change is not None:
            body["last_change"] = self.last_change.to_json()
        return body


def summary_of(record: ModelVersion) -> VersionSummary:
    """The page index's entry of a version record."""
    metrics = {source: {str(k): float(v) for k, v in (record.metrics.get(source) or {}).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
               for source in METRIC_SOURCES if isinstance(record.metrics.get(source), dict)}
    return VersionSummary(
        model=record.model, version=record.version, status=record.status, created=record.created,
        status_at=record.status_at, task=record.task, metrics=metrics,
        data_hash=(record.lineage or {}).get("data_hash"), last_change=record.history[-1] if record.history else None)


def version_summary(body: dict[str, Any]) -> dict[str, Any]:
    """Derive: a stored version record's summary, as JSON."""
    return summary_of(migrate_version(body)).to_json()


def as_stored(body: dict[str, Any]) -> dict[str, Any]:
    """Derive: the record itself."""
    return body


class RecordCache:
    """Derived bodies by key and ETag, per storage gateway: what a page already read is not read again.

    Bounded (least recently used out); bodies are shared, so callers must not change them.
    """

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._by_storage: weakref.WeakKeyDictionary[Storage, OrderedDict[str, tuple[str, dict[str, Any]]]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def get(self, storage: Storage, key: str, etag: str) -> dict[str, Any] | None:
        with self._lock:
            cached = self._by_storage.get(storage, OrderedDict()).get(key)
            if cached is None or cached[0] != etag:
                return None
            self._by_storage[storage].move_to_end(key)
            return cached[1]

    def clear(self) -> None:
        with self._lock:
            self._by_storage.clear()

    def put(self, storage: Storage, key: str, etag: str, body: dict[str, Any]) -> None:
        with self._lock:
            bodies = self._by_storage.setdefault(storage, OrderedDict())
            bodies[key] = (etag, body)
            bodies.move_to_end(key)
            while len(bodies) > self.entries:
                bodies.popitem(last=False)


CACHE = RecordCache()
Entries = dict[str, tuple[str, dict[str, Any]]]  # blob name -> (ETag, derived body)


def read_all(storage: Storage, blobs: Sequence[BlobInfo], derive: Derive = as_stored, *,
             index: str | None = None, check: Callable[[dict[str, Any]], object] | None = None) -> list[dict[str, Any]]:
    """What `derive` makes of each listed MLOPS blob, in order: from CACHE, else from the page index blob
    `index` (entries at the listed ETag that `check` accepts), else read (READERS at a time) and the index
    refreshed.

    A blob deleted since it was listed is left out. Without `index`, the process cache only. `check` raises
    for an entry the page could not use (a damaged index, a summary shape changed without a FORMAT bump):
    that record is read again, so the index heals instead of breaking the page.
    """
    key = f"{index}|" if index else f"{derive.__name__}|"
    found: Entries = {}
    for blob in blobs:
        cached = CACHE.get(storage, key + blob.name, blob.etag)
        if cached is not None:
            found[blob.name] = (blob.etag, cached)
    if len(found) < len(blobs):
        stored, stored_etag = _read_index(storage, index) if index else ({}, None)
        stored = {name: entry for name, entry in stored.items() if _usable(entry[1], check)}  # unusable: re-read
        fresh = {b.name: stored[b.name] for b in blobs
                 if b.name not in found and b.name in stored and stored[b.name][0] == b.etag}
        fresh.update(_read(storage, [b for b in blobs if b.name not in found and b.name not in fresh], derive))
        for name, entry in fresh.items():
            CACHE.put(storage, key + name, *entry)
        found.update(fresh)
        if index and {n: e[0] for n, e in stored.items()} != {n: e[0] for n, e in found.items()}:
            _write_index(storage, index, found, stored_etag)
    return [found[b.name][1] for b in blobs if b.name in found]


def _usable(body: dict[str, Any], check: Callable[[dict[str, Any]], object] | None) -> bool:
    if check is None:
        return True
    try:
        check(body)
    except (ValueError, TypeError, KeyError):  # pydantic's ValidationError is a ValueError
        return False
    return True


def _read(storage: Storage, blobs: Sequence[BlobInfo], derive: Derive) -> Entries:
    def one(blob: BlobInfo) -> tuple[str, tuple[str, dict[str, Any]]] | None:
        try:
            body, etag = storage.read_json(paths.MLOPS, blob.name)
        except NotFound:
            return None
        return blob.name, (etag, derive(body))  # the ETag read: newer than the listing's if it changed since

    if len(blobs) <= 1:
        found = [one(b) for b in blobs]
    else:
        with ThreadPoolExecutor(max_workers=min(READERS, len(blobs)), thread_name_prefix="ui-read") as pool:
            found = list(pool.map(one, blobs))
    return dict(item for item in found if item is not None)


def _read_index(storage: Storage, index: str) -> tuple[Entries, str | None]:
    """The index's entries and ETag; none from a missing or unreadable index or one of another FORMAT (rebuilt)."""
    try:
        blob = storage.read(paths.MLOPS, index)
    except NotFound:
        return {}, None
    etag = blob.etag
    try:
        body = json.loads(blob.data)
    except ValueError:
        return {}, etag
    entries = body.get("entries") if isinstance(body, dict) and body.get("format") == FORMAT else None
    if not isinstance(entries, dict):
        return {}, etag
    return {name: (str(e["etag"]), e["body"]) for name, e in entries.items()
            if isinstance(e, dict) and isinstance(e.get("body"), dict) and e.get("etag")}, etag


def _write_index(storage: Storage, index: str, entries: Entries, etag: str | None) -> None:
    body = {"format": FORMAT, "entries": {name: {"etag": e, "body": b} for name, (e, b) in sorted(entries.items())}}
    try:
        storage.write_json(paths.MLOPS, index, body, if_match=etag, create_only=etag is None)
    except Conflict:
        pass  # another page refreshed it meanwhile: the next view that misses refreshes it again
