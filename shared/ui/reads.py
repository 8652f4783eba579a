"""What the model pages read from storage: versions and runs through their page index, the few full
records a page shows, the newest run and report, specs as stored.

Every version and the newest runs come from the listing and its page index (shared/ui/index.py: one
read, plus the records written since the last view); full version records only for what a page shows in
full (the selected version and the champion), through the process cache.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from shared import names, paths, registry, runs
from shared.errors import ArtifactCorrupt, NotFound
from shared.lifecycle.records import ModelVersion, RunRecord, migrate_run, migrate_version
from shared.settings import Settings
from shared.storage import BlobInfo, Storage
from shared.ui.index import VersionSummary, as_stored, read_all, summary_of, version_summary

MAX_RUNS = 50  # runs listed on a model page, newest first
UNSHOWN = ("holdout_outputs",)  # the bulk of a version record (up to ~30 KiB); no page shows it
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_blobs(storage: Storage, model: str) -> dict[int, BlobInfo]:
    """The model's version records as listed, by number, oldest first. Raises NotFound."""
    if not registry.model_exists(storage, model):
        raise NotFound(f"model (name={model}) not found")
    listed = storage.list(paths.MLOPS, paths.versions_prefix(model))
    prefix = paths.versions_prefix(model)
    found = {}
    for blob in listed:
        number = blob.name.removeprefix(prefix).removesuffix(".json")
        if number.isdigit():
            found[int(number)] = blob
    return dict(sorted(found.items()))


def read_versions(storage: Storage, model: str, blobs: Mapping[int, BlobInfo] | None = None) -> list[VersionSummary]:
    """Every version's summary (timeline, chart), oldest first, through the page index. Raises NotFound."""
    listed = version_blobs(storage, model) if blobs is None else blobs
    bodies = read_all(storage, list(listed.values()), version_summary, index=paths.page_index(model, "versions"),
                      check=VersionSummary.model_validate)
    return [VersionSummary.model_validate(body) for body in bodies]


def shown_version(body: dict[str, Any]) -> dict[str, Any]:
    """Derive: a version record without what no page shows."""
    return {k: v for k, v in body.items() if k not in UNSHOWN}


def read_records(storage: Storage, blobs: Mapping[int, BlobInfo], numbers: Collection[int | None]
                 ) -> dict[int, ModelVersion]:
    """Full records (without UNSHOWN) of the listed versions among `numbers`, read in parallel."""
    wanted = [blobs[n] for n in sorted({n for n in numbers if n is not None}) if n in blobs]
    records = (migrate_version(body) for body in read_all(storage, wanted, shown_version))
    return {r.version: r for r in records}


def with_records(summaries: Sequence[VersionSummary], records: Mapping[int, ModelVersion]) -> list[VersionSummary]:
    """The summaries, those of the versions read in full taken from their records (the newer read)."""
    return [summary_of(records[s.version]) if s.version in records else s for s in summaries]


def read_runs(storage: Storage, model: str, limit: int = MAX_RUNS) -> tuple[list[RunRecord], int]:
    """The `limit` runs changed last (newest first), through the page index, and how many runs there are."""
    blobs = [b for b in storage.list(paths.MLOPS, paths.runs_prefix(model)) if b.name.endswith(".json")]
    recent = sorted(blobs, key=lambda b: (b.last_modified or _EPOCH, b.name), reverse=True)[:limit]
    found = (migrate_run(body) for body in read_all(storage, recent, as_stored, index=paths.page_index(model, "runs"),
                                                    check=migrate_run))
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
                 versions: Sequence[VersionSummary]) -> dict[str, Any] | None:
    """The training profile of the version a report monitored (what its histograms compare with)."""
    if report is None:
        return None
    record = next((v for v in versions if v.version == report.get("version")), None)
    data_hash = record.data_hash if record is not None else None
    if not data_hash:
        return None
    try:
        body, _ = storage.read_json(paths.MLOPS, paths.prepared_profile(model, str(data_hash)))
    except NotFound:
        return None
    return dict(body)
