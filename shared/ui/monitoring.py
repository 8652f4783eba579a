"""The monitoring part of a model page: drift in one phrase, per-feature drift, live metrics, histograms.

All pure functions of a monitoring report (shared/monitoring/report.py) and the training profile
(shared/profile.py) of the version it monitored.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OTHER = "__other__"  # shared.profile.OTHER (not imported: shared.profile loads pandas)

@dataclass(frozen=True)
class DriftState:
    """A model's drift in one phrase, from its latest monitoring report."""

    label: str
    tone: str  # ok | bad | warn | none (a CSS class)
    window_end: str | None = None
    drifted: tuple[str, ...] = ()


def drift_state(report: Mapping[str, Any] | None) -> DriftState:
    """What the latest report says: no monitoring yet, insufficient data, drift or no drift."""
    if report is None:
        return DriftState("no monitoring yet", "none")
    end = (report.get("window") or {}).get("end")
    features = report.get("features") or {}
    drifted = tuple(sorted(name for name, f in features.items() if f.get("drifted")))
    if report.get("status") == "failed":  # every delivery of the window failed (functions/poison.py)
        return DriftState(f"monitoring failed: {report.get('reason') or 'see the log'}", "bad", end, drifted)
    if report.get("status") == "insufficient_data":
        rows = (report.get("window") or {}).get("rows")
        return DriftState(f"insufficient data ({rows} rows)", "warn", end, drifted)
    if report.get("dataset_drift"):
        return DriftState(f"dataset drift ({len(drifted)}/{len(features)} features)", "bad", end, drifted)
    prediction = (report.get("prediction_drift") or {}).get("drifted")
    if drifted or prediction:
        what = f"{len(drifted)} feature(s)" + (" and predictions" if prediction else "")
        return DriftState(f"no dataset drift ({what} drifted)", "warn", end, drifted)
    return DriftState("no drift", "ok", end, drifted)


@dataclass(frozen=True)
class StatisticRow:
    name: str
    value: float | None
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class FeatureDriftRow:
    name: str
    kind: str
    status: str
    drifted: bool
    statistics: list[StatisticRow]
    null_rate: float | None
    quality: str  # out-of-range share (numeric) or unseen share (categorical), as text


@dataclass(frozen=True)
class LiveMetricRow:
    metric: str
    live: float | None
    validation: float | None
    bar: str


@dataclass(frozen=True)
class MonitoringView:
    version: int | None
    created: str | None
    window_start: str | None
    window_end: str | None
    rows: int | None
    state: DriftState
    features: list[FeatureDriftRow]
    prediction: list[StatisticRow]
    live_metrics: list[LiveMetricRow]
    label_coverage: float | None
    labelled_rows: int | None
    label_lag_seconds: float | None
    decision: list[str]
    retrain: bool
    live_histograms: bool


def monitoring_view(report: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> MonitoringView | None:
    """The latest monitoring report: per-feature drift, prediction drift, live metrics and the decision."""
    if report is None:
        return None
    window = report.get("window") or {}
    features = report.get("features") or {}
    live = report.get("live_metrics") or {}
    validation = report.get("validation_metrics") or {}
    bars = report.get("quality_bar") or spec.get("quality_bar") or {}
    return MonitoringView(
        version=report.get("version"), created=report.get("created"), window_start=window.get("start"),
        window_end=window.get("end"), rows=window.get("rows"), state=drift_state(report),
        features=[feature_row(name, f) for name, f in features.items()],
        prediction=_statistics((report.get("prediction_drift") or {}).get("statistics")),
        live_metrics=[LiveMetricRow(m, live.get(m), validation.get(m), bar_text(bars.get(m)))
                      for m in sorted(set(live) | set(bars))],
        label_coverage=report.get("label_coverage"), labelled_rows=report.get("labelled_rows"),
        label_lag_seconds=report.get("label_lag_seconds"),
        decision=[str(r) for r in (report.get("decision") or {}).get("reasons") or []],
        retrain=bool((report.get("decision") or {}).get("retrain")),
        live_histograms=any(_live_counts(f) is not None for f in features.values()))


def feature_row(name: str, feature: Mapping[str, Any]) -> FeatureDriftRow:
    kind = str(feature.get("kind") or "")
    share = feature.get("out_of_range_rate") if kind == "numeric" else feature.get("unseen_share")
    what = "out of range" if kind == "numeric" else "unseen"
    return FeatureDriftRow(
        name=name, kind=kind, status=str(feature.get("status") or ""), drifted=bool(feature.get("drifted")),
        statistics=_statistics(feature.get("statistics")), null_rate=feature.get("null_rate"),
        quality=f"{share:.1%} {what}" if isinstance(share, (int, float)) else "")


def _statistics(items: Any) -> list[StatisticRow]:
    return [StatisticRow(str(s.get("name")), s.get("value"), s.get("threshold"), bool(s.get("drifted")))
            for s in items or [] if isinstance(s, dict)]


def bar_text(bound: Mapping[str, Any] | None) -> str:
    if not bound:
        return ""
    return " ".join(f"{k} {v:g}" for k, v in bound.items() if isinstance(v, (int, float)))


def _live_counts(feature: Mapping[str, Any]) -> Any:
    """Live counts on the training bins, when the report carries them (live_bin_counts or live_counts)."""
    return feature.get("live_bin_counts", feature.get("live_counts"))


def histograms(report: Mapping[str, Any] | None, profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per feature: bin labels, the training share per bin and the live share when the report has it."""
    if report is None or profile is None:
        return {}
    out = {}
    trained = profile.get("features") or {}
    for name, feature in (report.get("features") or {}).items():
        base = trained.get(name) or {}
        labels, training = _training_bins(base)
        if not labels:
            continue
        out[name] = {"labels": labels, "training": _shares(training), "live": _live_shares(feature, base, labels)}
    return out


def _training_bins(profile: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    if profile.get("kind") == "numeric":
        edges = [float(e) for e in profile.get("bin_edges") or []]
        counts = [float(c) for c in profile.get("bin_counts") or []]
        if not edges or len(counts) != len(edges) + 1:
            return [], []
        labels = [f"<= {edges[0]:.4g}", *(f"{a:.4g} - {b:.4g}" for a, b in zip(edges, edges[1:], strict=False)),
                  f"> {edges[-1]:.4g}"]
        return labels, counts
    counts_by_name = {str(k): float(v) for k, v in (profile.get("counts") or {}).items()}
    return list(counts_by_name), list(counts_by_name.values())


def _live_shares(feature: Mapping[str, Any], profile: Mapping[str, Any], labels: list[str]) -> list[float] | None:
    live = _live_counts(feature)
    if isinstance(live, list) and len(live) == len(labels):
        return _shares([float(x) for x in live])
    if isinstance(live, dict) and profile.get("kind") != "numeric":
        counts = [float(live.get(label, 0)) for label in labels]
        if OTHER in labels:  # live categories the profile did not keep by name count as its "other" bin
            counts[labels.index(OTHER)] += sum(float(n) for k, n in live.items() if k not in labels)
        return _shares(counts)
    return None


def _shares(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [round(c / total, 6) if total else 0.0 for c in counts]
