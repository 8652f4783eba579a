"""What the model pages read from storage: records in parallel, the newest run and report, specs as stored.

A page reads every version record of a model and its newest runs: one after the other that is one
storage round trip each, so they are read READERS at a time, and a record whose ETag has not changed
since the last page is not read again (RecordCache).
"""
from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from shared import names, paths, registry, runs
from shared.errors import ArtifactCorrupt, NotFound
from shared.lifecycle.records import ModelVersion, RunRecord, migrate_run, migrate_version
from shared.settings import Settings
from shared.storage import BlobInfo, Storage

MAX_RUNS = 50  # runs listed on a model page, newest first
READERS = 16  # records read at once
CACHE_ENTRIES = 1_000  # record bodies kept per storage gateway (versions without their bulky parts: a few KiB)
UNSHOWN = ("holdout_outputs", "signature")  # the bulk of a version record (up to ~30 KiB); no page shows them
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RecordCache:
    """Record bodies by blob name and ETag, per storage gateway: a page reads a record again only once it changed.

    A listing gives every blob's ETag, so a second view of a model costs its listings and the records
    written since. Bounded (least recently used out); bodies are shared, so callers must not change them.
    """

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._by_storage: weakref.WeakKeyDictionary[Storage, OrderedDict[str, tuple[str, dict[str, Any]]]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def get(self, storage: Storage, blob: BlobInfo) -> dict[str, Any] | None:
        with self._lock:
            cached = self._by_storage.get(storage, OrderedDict()).get(blob.name)
            if cached is None or cached[0] != blob.etag:
                return None
            self._by_storage[storage].move_to_end(blob.name)
            return cached[1]

    def clear(self) -> None:
        with self._lock:
            self._by_storage.clear()

    def put(self, storage: Storage, name: str, etag: str, body: dict[str, Any]) -> None:
        with self._lock:
            bodies = self._by_storage.setdefault(storage, OrderedDict())
            bodies[name] = (etag, body)
            bodies.move_to_end(name)
            while len(bodies) > self.entries:
                bodies.popitem(last=False)


CACHE = RecordCache()


def read_all(storage: Storage, blobs: Sequence[BlobInfo], *, drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The JSON bodies of listed MLOPS blobs, in order: unchanged ones from CACHE, the rest read READERS at a time.

    `drop`: top-level keys left out (before caching). A blob deleted since it was listed is left out.
    """
    def one(blob: BlobInfo) -> dict[str, Any] | None:
        cached = CACHE.get(storage, blob)
        if cached is not None:
            return cached
        try:
            body, etag = storage.read_json(paths.MLOPS, blob.name)
        except NotFound:
            return None
        kept = {k: v for k, v in body.items() if k not in drop}
        CACHE.put(storage, blob.name, etag, kept)
        return kept

    missing = sum(CACHE.get(storage, b) is None for b in blobs)
    if missing <= 1:
        found = [one(b) for b in blobs]
    else:
        with ThreadPoolExecutor(max_workers=min(READERS, missing), thread_name_prefix="ui-read") as pool:
            found = list(pool.map(one, blobs))
    return [body for body in found if body is not None]


def read_versions(storage: Storage, model: str) -> list[ModelVersion]:
    """registry.list_versions, with the records read in parallel. Raises NotFound."""
    if not registry.model_exists(storage, model):
        raise NotFound(f"model (name={model}) not found")
    blobs = sorted(storage.list(paths.MLOPS, paths.versions_prefix(model)), key=lambda b: b.name)
    return [migrate_version(body) for body in read_all(storage, blobs, drop=UNSHOWN)]


def read_runs(storage: Storage, model: str, limit: int = MAX_RUNS) -> tuple[list[RunRecord], int]:
    """The `limit` runs changed last (newest first), read in parallel, and how many runs there are."""
    blobs = [b for b in storage.list(paths.MLOPS, paths.runs_prefix(model)) if b.name.endswith(".json")]
    recent = sorted(blobs, key=lambda b: (b.last_modified or _EPOCH, b.name), reverse=True)[:limit]
    found = (migrate_run(body) for body in read_all(storage, recent))
    return sorted(found, key=lambda r: r.created, reverse=True), len(blobs)


def latest_report(storage: Storage, model: str) -> dict[str, Any] | None:
    """The newest monitoring report (names sort in time order, as shared.monitoring.report.list_reports reads them)."""
    found = sorted(b.name for b in storage.list(paths.MLOPS, paths.monitoring_prefix(model)))
    return dict(storage.read_json(paths.MLOPS, found[-1])[0]) if found else None


def repository_links(settings: Settings) -> dict[str, str]:
    """Commit URL templates per git provider ({repository}, {commit}); Azure DevOps only when its org is set."""
    links = {"github": "https://github.com/{repository}/commit/{commit}"}
    org, project = settings.ado_org_url, settings.ado_project
    if org and project and org.startswith("https://"):
        base = org.rstrip("/").replace("{", "{{").replace("}", "}}")
        links["azure-devops"] = f"{base}/{quote(project)}/_git/{{repository}}/commit/{{commit}}"
    return links


def current_spec_body(storage: Storage, model: str) -> dict[str, Any] | None:
    """The model's current spec as stored (plain JSON), None when it has none."""
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_current(model))
    except NotFound:
        return None
    return dict(body.get("spec") or {})


def spec_of(storage: Storage, record: ModelVersion | None) -> dict[str, Any] | None:
    """The spec a version was trained with, as stored (plain JSON), None when gone."""
    digest = (record.lineage or {}).get("spec_hash") if record is not None else None
    if record is None or not digest:
        return None
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.spec_version(record.model, str(digest)))
    except NotFound:
        return None
    return dict(body.get("spec") or {})


def holdout_charts_of(storage: Storage, record: ModelVersion | None) -> tuple[dict[str, Any] | None, str | None]:
    """The version's holdout charts (sha256-checked), or why there are none."""
    if record is None:
        return None, "no version yet"
    if "holdout_charts" not in record.artifacts:
        return None, (f"version {record.version} has no holdout charts: they are stored at validation "
                      "(this version was not validated, or was validated before charts were recorded)")
    try:
        return json.loads(registry.read_artifact(storage, record, "holdout_charts")), None
    except ArtifactCorrupt as exc:
        return None, exc.message


def latest_run(storage: Storage, model: str) -> RunRecord | None:
    """The run whose record changed last (one read, whatever the number of runs)."""
    blobs = [b for b in storage.list(paths.MLOPS, paths.runs_prefix(model)) if b.name.endswith(".json")]
    if not blobs:
        return None
    newest = max(blobs, key=lambda b: (b.last_modified or _EPOCH, b.name))
    run_id = newest.name.removeprefix(paths.runs_prefix(model)).removesuffix(".json")
    try:
        return runs.get(storage, model, names.run_id(run_id))
    except NotFound:
        return None


def profile_for(storage: Storage, model: str, report: Mapping[str, Any] | None,
                 versions: Sequence[ModelVersion]) -> dict[str, Any] | None:
    """The training profile of the version a report monitored (what its histograms compare with)."""
    if report is None:
        return None
    record = next((v for v in versions if v.version == report.get("version")), None)
    data_hash = (record.lineage or {}).get("data_hash") if record is not None else None
    if not data_hash:
        return None
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.prepared_profile(model, str(data_hash)))
    except NotFound:
        return None
    return dict(body)
