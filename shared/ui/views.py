"""View models of the model pages, built by pure functions from the registry's typed records.

load_models_page and load_model_page read storage (reads.py: registry, runs, specs, monitoring reports,
the selected version's holdout charts and training profile); everything else here (and in gates.py and
monitoring.py) is a pure function of records, which the templates render and the unit tests check
without storage.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import yaml

from shared import registry
from shared.errors import NotFound
from shared.lifecycle.records import (
    FORMER_CHAMPION,
    AliasChange,
    Aliases,
    ModelVersion,
    RunEvent,
    RunRecord,
    VersionStatus,
)
from shared.registry import RegisteredModel
from shared.storage import Storage
from shared.ui.contract_view import ContractView, contract_view, uncompared
from shared.ui.gates import Gate, GateState, checklist
from shared.ui.index import VersionSummary
from shared.ui.monitoring import DriftState, MonitoringView, drift_state, histograms, monitoring_view
from shared.ui.reads import (
    MAX_RUNS,
    current_spec_body,
    holdout_charts_of,
    latest_report,
    latest_run,
    profile_for,
    read_records,
    read_runs,
    read_versions,
    spec_of,
    version_blobs,
    with_records,
)
from shared.ui.serve import Links

V = VersionStatus
DEFAULT_KEY_METRIC = {"classification": "roc_auc", "regression": "rmse"}
SPEC_ORDER = ("name", "description", "task", "target", "features", "estimator", "split", "quality_bar",
              "comparison", "approval", "latency_budget_ms", "data_checks", "monitoring")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100})?")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
HEAT_LEVELS = 10


# -- shared pieces --------------------------------------------------------------------------------------


def key_metric(spec: Mapping[str, Any] | None, task: str | None) -> str:
    """The metric a model is judged by: its first comparison metric, else its first quality bar, else the task's."""
    spec = spec or {}
    for section in ("comparison", "quality_bar"):
        metrics = list((spec.get(section) or {}).keys())
        if metrics:
            return str(metrics[0])
    return DEFAULT_KEY_METRIC.get(str(task or spec.get("task")), "rmse")


def metric_value(record: ModelVersion | VersionSummary, metric: str) -> float | None:
    """A version's holdout metric: the ONNX model's (validation), else the sklearn pipeline's (training)."""
    for source in ("onnx_holdout", "sklearn_holdout"):
        value = (record.metrics.get(source) or {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def promotion_of(aliases: Aliases, version: int | None) -> AliasChange | None:
    """The alias change that last made `version` the champion."""
    return next((c for c in reversed(aliases.history) if c.to_version == version), None)


# -- the models list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One model on the list: its champion, latest run, pending approvals and drift."""

    name: str
    href: str
    task: str | None
    description: str | None
    champion: int | None
    key_metric: str
    key_value: float | None
    promoted: AliasChange | None
    latest_run: RunRecord | None
    versions: int
    pending: int
    drift: DriftState


@dataclass(frozen=True)
class ModelsPage:
    models: list[ModelRow]
    links: Links


def model_row(model: RegisteredModel, spec: Mapping[str, Any] | None, versions: Sequence[VersionSummary],
              latest_run: RunRecord | None, report: Mapping[str, Any] | None, links: Links) -> ModelRow:
    """The list's row of one model (pure)."""
    metric = key_metric(spec, model.task)
    champion = model.aliases.champion
    record = next((v for v in versions if v.version == champion), None)
    return ModelRow(
        name=model.name, href=links.model(model.name), task=model.task,
        description=(spec or {}).get("description"), champion=champion, key_metric=metric,
        key_value=metric_value(record, metric) if record else None, promoted=promotion_of(model.aliases, champion),
        latest_run=latest_run, versions=len(versions), pending=sum(v.status == V.PENDING_APPROVAL for v in versions),
        drift=drift_state(report),
    )


MODEL_ROW_READERS = 8  # models whose rows are read at once: each row is ~10 round trips one after another


def load_models_page(storage: Storage, links: Links) -> ModelsPage:
    """Every model's row (per model: its version listing and page index, run listing, latest run and report),
    models read MODEL_ROW_READERS at a time, rows in name order."""
    def row(model: RegisteredModel) -> ModelRow:
        return model_row(model, current_spec_body(storage, model.name), read_versions(storage, model.name),
                         latest_run(storage, model.name), latest_report(storage, model.name), links)

    models = registry.list_models(storage)
    if len(models) <= 1:
        return ModelsPage([row(m) for m in models], links)
    with ThreadPoolExecutor(max_workers=min(MODEL_ROW_READERS, len(models)), thread_name_prefix="ui-models") as pool:
        return ModelsPage(list(pool.map(row, models)), links)


# -- one model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    """One version on the timeline."""

    version: int
    status: str
    created: datetime
    status_at: datetime | None
    key_value: float | None
    aliases: tuple[str, ...]
    href: str
    selected: bool
    last_change: str | None


@dataclass(frozen=True)
class GitView:
    provider: str
    repository: str
    commit: str
    ref: str | None
    pusher: str | None
    path: str | None
    url: str | None


@dataclass(frozen=True)
class LineageView:
    source_blob: str | None
    data_hash: str | None
    spec_hash: str | None
    git: GitView | None
    libraries: dict[str, str]
    artifacts: list[tuple[str, str, str]]  # name, path, sha256
    facts: list[tuple[str, str]]  # estimator, seed, rows, reason, monitoring


@dataclass(frozen=True)
class HeatCell:
    count: int
    heat: int  # 0..HEAT_LEVELS-1: the share of its row (a CSS class, never an inline style)
    diagonal: bool


@dataclass(frozen=True)
class ConfusionView:
    labels: list[str]
    rows: list[list[HeatCell]]
    truncated: bool


@dataclass(frozen=True)
class DiffLine:
    kind: str  # meta | hunk | add | del | ctx
    text: str


@dataclass(frozen=True)
class Actions:
    """What a reviewer may do from this page (each goes through the admin API and its state machine)."""

    approve: int | None = None
    rollback_from: int | None = None
    rollback_to: int | None = None
    restore: int | None = None  # a former champion selected: roll back to it
    retrain: bool = True


@dataclass(frozen=True)
class ModelPage:
    model: str
    description: str | None
    task: str | None
    approval: str | None
    key_metric: str
    champion: ModelVersion | None
    champion_value: float | None
    previous: int | None
    promoted: AliasChange | None
    selected: ModelVersion | None
    versions: list[VersionRow]
    alias_history: list[AliasChange]
    gates: list[Gate]
    lineage: LineageView | None
    contract: ContractView | None
    confusion: ConfusionView | None
    charts_note: str | None
    monitoring: MonitoringView | None
    runs: list[RunRow]
    runs_total: int
    spec_text: str | None
    spec_diff: list[DiffLine] | None
    diff_note: str | None
    actions: Actions
    links: Links
    data: dict[str, Any] = field(default_factory=dict)  # the page's JSON data island (chart data)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    status: str
    created: datetime
    version: int | None
    error: str | None
    timeline: list[RunEvent]
    attempts: list[str]
    href: str | None


@dataclass(frozen=True)
class ModelSources:
    """Everything one model page is built from, read from storage by load_model_page."""

    model: str
    spec: dict[str, Any] | None
    versions: list[VersionSummary]  # every version, oldest first
    aliases: Aliases
    runs: list[RunRecord]  # the newest MAX_RUNS
    runs_total: int
    selected: ModelVersion | None
    champion: ModelVersion | None
    selected_spec: dict[str, Any] | None
    champion_spec: dict[str, Any] | None
    charts: dict[str, Any] | None
    charts_problem: str | None
    report: dict[str, Any] | None
    profile: dict[str, Any] | None
    repositories: dict[str, str] = field(default_factory=dict)  # provider -> commit URL template


def load_model_page(storage: Storage, model: str, version: int | None, links: Links,
                    repositories: dict[str, str] | None = None) -> ModelPage:
    """The page of one model with `version` selected (default: the champion, else the latest).

    Raises NotFound (no such model or version).
    """
    blobs = version_blobs(storage, model)
    summaries = read_versions(storage, model, blobs)
    aliases, _ = registry.get_aliases(storage, model)
    chosen = select_version(model, summaries, aliases, version)
    records = read_records(storage, blobs, (chosen.version if chosen else None, aliases.champion))
    if chosen is not None and chosen.version not in records:
        raise NotFound(f"model version (name={model}, version={chosen.version}) not found")
    selected = records[chosen.version] if chosen is not None else None
    champion = records.get(aliases.champion) if aliases.champion is not None else None
    versions = with_records(summaries, records)
    charts, problem = holdout_charts_of(storage, selected)
    report = latest_report(storage, model)
    recent_runs, runs_total = read_runs(storage, model)
    sources = ModelSources(
        model=model, spec=current_spec_body(storage, model), versions=versions, aliases=aliases,
        runs=recent_runs, runs_total=runs_total, selected=selected, champion=champion,
        selected_spec=spec_of(storage, selected),
        champion_spec=spec_of(storage, champion), charts=charts, charts_problem=problem, report=report,
        profile=profile_for(storage, model, report, versions), repositories=repositories or {})
    return model_page(sources, links)


def select_version(model: str, versions: Sequence[VersionSummary], aliases: Aliases,
                   version: int | None) -> VersionSummary | None:
    """The requested version, else the champion, else the newest. Raises NotFound for a missing one."""
    by_number = {v.version: v for v in versions}
    if version is not None:
        if version not in by_number:
            raise NotFound(f"model version (name={model}, version={version}) not found")
        return by_number[version]
    if aliases.champion in by_number:
        return by_number[aliases.champion]
    return versions[-1] if versions else None


def model_page(src: ModelSources, links: Links) -> ModelPage:
    """The page of one model (pure)."""
    spec = src.spec or src.champion_spec or {}
    metric = key_metric(spec, src.versions[-1].task if src.versions else None)
    aliases = src.aliases
    champion, selected = src.champion, src.selected
    diff, diff_note = spec_diff(src.champion_spec, src.selected_spec, champion, selected)
    monitoring = monitoring_view(src.report, spec)
    return ModelPage(
        model=src.model, description=spec.get("description"), task=spec.get("task"), approval=spec.get("approval"),
        key_metric=metric, champion=champion, champion_value=metric_value(champion, metric) if champion else None,
        previous=aliases.previous,
        promoted=promotion_of(aliases, aliases.champion),
        selected=selected, versions=version_rows(src.versions, aliases, selected, metric, links),
        alias_history=list(reversed(aliases.history)),
        gates=checklist(selected.decision, selected.parity, review_of(selected)) if selected else [],
        lineage=lineage_view(selected, src.repositories) if selected else None,
        contract=contract_view(selected, champion),
        confusion=confusion_view(src.charts), charts_note=src.charts_problem,
        monitoring=monitoring, runs=[run_row(r, src.model, links) for r in src.runs[:MAX_RUNS]],
        runs_total=src.runs_total, spec_text=spec_yaml(src.selected_spec) if src.selected_spec else None,
        spec_diff=diff, diff_note=diff_note, actions=actions_for(aliases, selected), links=links,
        data=page_data(src, metric, spec, links),
    )


def version_rows(versions: Sequence[VersionSummary], aliases: Aliases, selected: ModelVersion | None,
                 metric: str, links: Links) -> list[VersionRow]:
    """The version timeline, newest first."""
    named = {aliases.champion: "champion", aliases.previous: "previous"}
    rows = []
    for v in reversed(versions):
        last = v.last_change
        rows.append(VersionRow(
            version=v.version, status=str(v.status), created=v.created, status_at=v.status_at,
            key_value=metric_value(v, metric), aliases=tuple(n for k, n in named.items() if k == v.version),
            href=links.model(v.model, v.version), selected=selected is not None and v.version == selected.version,
            last_change=f"{last.by}: {last.reason}" if last and last.reason else None))
    return rows


def review_of(record: ModelVersion) -> tuple[GateState, str] | None:
    """What a reviewer did to the version while it was pending approval, if anything."""
    approval = getattr(record, "approval", None)
    if isinstance(approval, dict) and approval.get("by"):
        return "passed", f"approved by {approval['by']} at {_moment(approval.get('at'))}"
    for change in record.history:
        if change.from_status == V.PENDING_APPROVAL and change.status == V.REJECTED:
            return "failed", change.reason or f"rejected by {change.by}"
    return None


def _moment(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS UTC' (other text as it is)."""
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(value)


def actions_for(aliases: Aliases, selected: ModelVersion | None) -> Actions:
    """Approve/reject a pending selection, roll back the champion, restore a former champion, retrain."""
    pending = selected is not None and selected.status == V.PENDING_APPROVAL
    restore = (selected.version if selected is not None and selected.status in FORMER_CHAMPION
               and selected.version != aliases.champion and aliases.champion is not None else None)
    return Actions(
        approve=selected.version if pending and selected is not None else None,
        rollback_from=aliases.champion if aliases.previous is not None else None,
        rollback_to=aliases.previous, restore=restore)


def lineage_view(record: ModelVersion, repositories: Mapping[str, str]) -> LineageView:
    """Where a version came from: data, spec, git, libraries, artifacts."""
    lineage = record.lineage or {}
    facts = [(k, str(lineage[k])) for k in ("estimator", "seed", "train_rows", "holdout_rows", "reason")
             if lineage.get(k) is not None]
    if lineage.get("monitoring"):
        facts.append(("monitoring", json.dumps(lineage["monitoring"], sort_keys=True, default=str)))
    return LineageView(
        source_blob=lineage.get("source_blob"), data_hash=lineage.get("data_hash"),
        spec_hash=lineage.get("spec_hash"), git=git_view(lineage.get("git"), repositories),
        libraries={str(k): str(v) for k, v in sorted((lineage.get("libraries") or {}).items())},
        artifacts=[(name, a.path, a.sha256) for name, a in sorted(record.artifacts.items())], facts=facts)


def git_view(git: Mapping[str, Any] | None, repositories: Mapping[str, str]) -> GitView | None:
    """The pushed commit a version's spec came from, with a link when its repository is known and well-formed."""
    if not git:
        return None
    provider, repository, commit = (str(git.get(k) or "") for k in ("provider", "repository", "commit"))
    template = repositories.get(provider)
    url = None
    if template and _REPOSITORY.fullmatch(repository) and _COMMIT.fullmatch(commit):
        url = template.format(repository=quote(repository, safe="/"), commit=commit)
    return GitView(provider, repository, commit, git.get("ref"), git.get("pusher"), git.get("path"), url)


def confusion_view(charts: Mapping[str, Any] | None) -> ConfusionView | None:
    """The confusion matrix with each cell's share of its true class as a heat level."""
    confusion = (charts or {}).get("confusion")
    if not confusion:
        return None
    rows = []
    for i, counts in enumerate(confusion.get("matrix") or []):
        total = sum(counts) or 1
        rows.append([HeatCell(int(n), min(HEAT_LEVELS - 1, int(n * HEAT_LEVELS / total)), i == j)
                     for j, n in enumerate(counts)])
    return ConfusionView([str(x) for x in confusion.get("labels") or []], rows, bool(confusion.get("truncated")))


def run_row(run: RunRecord, model: str, links: Links) -> RunRow:
    """One run of the history with its timeline and failed tries."""
    attempts = [f"{a.stage} attempt {a.attempt}: {a.error_type}: {a.error}" for a in run.attempts]
    return RunRow(run.run_id, str(run.status), run.created, run.version, run.error, list(run.timeline), attempts,
                  links.model(model, run.version) if run.version is not None else None)


# -- specs ----------------------------------------------------------------------------------------------


def spec_yaml(spec: Mapping[str, Any]) -> str:
    """A stored spec as YAML, its keys in the order a spec is written."""
    ordered = {k: spec[k] for k in SPEC_ORDER if k in spec}
    ordered.update({k: v for k, v in spec.items() if k not in ordered})
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)


def spec_diff(champion_spec: Mapping[str, Any] | None, selected_spec: Mapping[str, Any] | None,
              champion: ModelVersion | None, selected: ModelVersion | None) -> tuple[list[DiffLine] | None, str | None]:
    """A unified diff from the champion's spec to the selected version's, or why there is none."""
    if (why := uncompared(selected, champion)) is not None or champion is None or selected is None:
        return None, why
    if champion_spec is None or selected_spec is None:
        return None, "a spec of the two versions is no longer stored"
    if champion_spec == selected_spec:
        return None, f"the same spec as the champion (version {champion.version})"
    lines = difflib.unified_diff(spec_yaml(champion_spec).splitlines(), spec_yaml(selected_spec).splitlines(),
                                 fromfile=f"version {champion.version} (champion)",
                                 tofile=f"version {selected.version}", lineterm="")
    return [DiffLine(_diff_kind(line), line) for line in lines], None


def _diff_kind(line: str) -> str:
    if line.startswith(("---", "+++")):
        return "meta"
    return {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")


# -- the page's chart data -----------------------------------------------------------------------------


def page_data(src: ModelSources, metric: str, spec: Mapping[str, Any], links: Links) -> dict[str, Any]:
    """What static/ui.js draws and calls: metrics over versions, holdout charts, drift histograms, the admin API."""
    charts = src.charts or {}
    return {
        "model": src.model, "api": links.api(src.model), "champion": src.aliases.champion,
        "selected": src.selected.version if src.selected else None,
        "metrics": metric_series(src.versions, metric, spec),
        "roc": charts.get("roc") or [], "scatter": charts.get("scatter"), "residuals": charts.get("residuals"),
        "histograms": histograms(src.report, src.profile),
    }


def metric_series(versions: Sequence[VersionSummary], metric: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Each charted metric (the key metric, then the quality bar's) per version, and its bar from the current spec."""
    bars = spec.get("quality_bar") or {}
    charted = list(dict.fromkeys([metric, *bars]))
    return {
        "versions": [v.version for v in versions],
        "series": {m: [metric_value(v, m) for v in versions] for m in charted},
        "bars": {m: dict(bars[m]) for m in charted if m in bars},
    }
