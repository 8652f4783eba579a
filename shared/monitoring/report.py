"""One monitoring window of a champion: drift, data quality, live metrics from feedback, and the retrain decision.

A report is written once per (model, version, window) with create-only semantics, so a redelivered
monitor message (or two racing ones) yields one report and at most one retraining. When the decision
is to retrain, the retraining data (the current training data plus the labelled production rows)
is prepared and content-addressed like a drop before the report is written; the run is started
after, and a redelivery that finds the report re-sends a training request still unsent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shared import feedback, paths, registry, runs
from shared.errors import NotFound, PipelineError
from shared.lifecycle.records import ModelVersion, RunStatus
from shared.lifecycle.stages import Context
from shared.messages import TrainRequest
from shared.monitoring.policy import Decision, PastWindow, WindowFacts, decide
from shared.monitoring.window import category_string
from shared.spec import TrainingSpec, spec_hash

log = logging.getLogger("mlops.monitoring")
PAST_REPORTS = 60  # enough for of_windows (<= 24) and a day of hourly windows for max_per_day
REFERENCE_ROWS = 20_000


def window_id(end: datetime) -> str:
    return end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def run_monitor(ctx: Context, model: str, *, window_end: datetime | None = None,
                trigger: str = "timer") -> dict[str, Any]:
    """The report of the window ending at `window_end` (default: now) for the current champion.

    Raises NotFound (no such model or spec) and Unavailable (no champion yet).
    """
    storage = ctx.storage
    spec, _ = registry.current_spec(storage, model)
    version, _ = registry.resolve_alias(storage, model, "champion")
    champion = registry.get_version(storage, model, version)
    end = _window_end(window_end, ctx.clock.now())
    path = paths.monitoring_report(model, window_id(end), version, spec.monitoring.window_hours)
    existing = _existing(ctx, path)
    if existing is not None:
        return existing
    window = _measure(ctx, spec, champion, end - timedelta(hours=spec.monitoring.window_hours), end)
    decision = decide(spec.monitoring.retrain, window.facts(end, spec, champion), _past(ctx, model, path))
    body = window.report(spec, champion, decision, trigger, ctx.clock.now())
    if decision.retrain:
        body["retraining"] = _prepare_retraining(ctx, spec, model, window, path, decision)
    if not storage.create_json(paths.MLOPS, path, body):
        return _existing(ctx, path) or body  # a racing delivery wrote it first: its report stands
    feedback.mark_joined(storage, model, window.joined_ids, by=path)
    if decision.retrain:
        _start_retraining(ctx, body)
    log.info("monitor: %s v%s window %s: drift=%s decision=%s", model, version, window_id(end),
             body["dataset_drift"], decision.reasons)
    return body


def note_failure(ctx: Context, model: str, window_end: datetime, exc: BaseException, attempt: int) -> None:
    """Keep why an attempt at a window failed, for the report give_up_window writes once the host moves the
    message to the poison queue. Never raises: the host must see the original failure (and retry)."""
    reason = exc.message if isinstance(exc, PipelineError) else (
        f"internal error ({type(exc).__name__}); the monitor function's log has the details")
    end = _window_end(window_end, ctx.clock.now())
    try:
        ctx.storage.write_json(paths.MLOPS, paths.monitoring_failure(model, window_id(end)),
                               {"reason": reason, "attempts": attempt, "at": ctx.clock.now().isoformat()})
    except Exception:  # storage down as well: the poison report says the reason is unknown
        log.exception("monitor: could not record why window %s of %s failed", window_id(end), model)


def give_up_window(ctx: Context, model: str, window_end: datetime, trigger: str) -> dict[str, Any]:
    """The report of a window whose message failed every delivery: status failed, with the last attempt's reason,
    and no retraining decision; the window's own report instead when it was written after all.

    Raises NotFound (no such model or spec) and Unavailable (no champion).
    """
    storage = ctx.storage
    spec, _ = registry.current_spec(storage, model)
    version, _ = registry.resolve_alias(storage, model, "champion")
    end = _window_end(window_end, ctx.clock.now())
    path = paths.monitoring_report(model, window_id(end), version, spec.monitoring.window_hours)
    existing = _existing(ctx, path)
    if existing is not None:
        return existing
    try:
        noted, _ = storage.read_json(paths.MLOPS, paths.monitoring_failure(model, window_id(end)))
        reason, attempts = str(noted.get("reason")), noted.get("attempts")
    except NotFound:
        reason, attempts = "unknown (no attempt recorded one); the monitor function's log has the errors", None
    # the report of an empty window whose status is failed: the same keys as every report, nothing measured
    empty = _Window(end - timedelta(hours=spec.monitoring.window_hours), end, {"status": "failed"}, _Joined(), [], None)
    decision = Decision(False, None, [f"no decision: the window failed on every delivery: {reason}"])
    body = empty.report(spec, registry.get_version(storage, model, version), decision, trigger, ctx.clock.now())
    body.update(reason=reason, attempts=attempts)
    if not storage.create_json(paths.MLOPS, path, body):
        return _existing(ctx, path) or body
    log.error("monitor: %s v%s window %s failed on every delivery: %s", model, version, window_id(end), reason)
    return body


def _window_end(window_end: datetime | None, now: datetime) -> datetime:
    """The window's (exclusive) end in whole seconds: a given end rounded down, "now" rounded up, so that a
    window run now holds every row scored before the call, also those scored earlier in the same second."""
    if window_end is not None:
        return window_end.astimezone(UTC).replace(microsecond=0)
    now = now.astimezone(UTC)
    return now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)


def _existing(ctx: Context, path: str) -> dict[str, Any] | None:
    try:
        body, _ = ctx.storage.read_json(paths.MLOPS, path)
    except NotFound:
        return None
    if body.get("retraining", {}).get("run_id"):
        _start_retraining(ctx, body)  # idempotent: re-sends only a request a crash left unsent
    return dict(body)


def list_reports(ctx: Context, model: str, limit: int = 50) -> list[dict[str, Any]]:
    """Reports of a model, latest first."""
    names = [b.name for b in ctx.storage.list(paths.MLOPS, paths.monitoring_prefix(model))]
    return [ctx.storage.read_json(paths.MLOPS, name)[0] for name in sorted(names, reverse=True)[:limit]]


def _past(ctx: Context, model: str, path: str) -> list[PastWindow]:
    names = sorted(b.name for b in ctx.storage.list(paths.MLOPS, paths.monitoring_prefix(model)) if b.name < path)
    past = []
    for name in names[-PAST_REPORTS:]:
        body, _ = ctx.storage.read_json(paths.MLOPS, name)
        retrained = body.get("retraining") and body["decision"]["retrain"]
        past.append(PastWindow(datetime.fromisoformat(body["window"]["end"]), body.get("dataset_drift"),
                               datetime.fromisoformat(body["created"]) if retrained else None))
    return past


# -- measuring a window -----------------------------------------------------------------------------


@dataclass
class _Joined:
    """Predictions of the window that have a label: bounded by the number of labels, not of rows."""

    y_true: list[Any] = field(default_factory=list)
    y_pred: list[Any] = field(default_factory=list)
    proba: list[np.ndarray] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    after_training: int = 0
    unknown_labels: int = 0


@dataclass
class _Window:
    start: datetime
    end: datetime
    drift: dict[str, Any]
    joined: _Joined
    joined_ids: list[str]
    live_metrics: dict[str, float] | None

    def facts(self, now: datetime, spec: TrainingSpec, champion: ModelVersion) -> WindowFacts:
        return WindowFacts(now=now, dataset_drift=self.drift.get("dataset_drift"),
                           below_bar=_below_bar(spec, self.live_metrics), labels=len(self.joined.y_true),
                           new_labelled_rows=self.joined.after_training)

    def report(self, spec: TrainingSpec, champion: ModelVersion, decision: Decision, trigger: str,
               created: datetime) -> dict[str, Any]:
        rows = int(self.drift.get("rows") or 0)
        labelled = len(self.joined.y_true)
        validation = (champion.metrics or {}).get("onnx_holdout") or {}
        return {
            "model": champion.model, "version": champion.version, "trigger": trigger, "created": created.isoformat(),
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat(), "rows": rows},
            "status": self.drift.get("status"), "dataset_drift": self.drift.get("dataset_drift"),
            "drift_share": self.drift.get("drift_share"), "features": self.drift.get("features", {}),
            "prediction_drift": self.drift.get("prediction_drift"), "data_quality": self.drift.get("data_quality"),
            "live_metrics": self.live_metrics,
            "validation_metrics": {k: validation[k] for k in (self.live_metrics or {}) if k in validation},
            "quality_bar": {k: v.model_dump() for k, v in spec.quality_bar.items()},
            "label_coverage": round(labelled / rows, 6) if rows else 0.0,
            "labelled_rows": labelled, "unknown_labels": self.joined.unknown_labels,
            "label_lag_seconds": float(np.median(self.joined.lags)) if self.joined.lags else None,
            "decision": decision.to_json(),
        }


def _measure(ctx: Context, spec: TrainingSpec, champion: ModelVersion, start: datetime,
             end: datetime) -> _Window:
    from shared.monitoring.drift import DriftAccumulator
    from shared.monitoring.window import feature_kinds, iter_log_chunks

    data_hash = (champion.lineage or {})["data_hash"]
    profile, _ = ctx.storage.read_json(paths.MLOPS, paths.prepared_profile(champion.model, data_hash))
    accumulator = DriftAccumulator(spec, profile, _reference_sample(ctx, champion.model, data_hash, spec),
                                   champion.holdout_outputs)
    labels = feedback.current_labels(ctx.storage, champion.model)
    joined, joined_ids = _Joined(), []
    for chunk in iter_log_chunks(ctx.storage, champion.model, champion.version, start, end,
                                 kinds=feature_kinds(spec)):
        accumulator.add(chunk)
        joined_ids += _join(chunk, labels, spec, champion, joined)
    return _Window(start, end, accumulator.result().to_json(), joined, joined_ids,
                   _live_metrics(spec, champion, joined))


def _reference_sample(ctx: Context, model: str, data_hash: str, spec: TrainingSpec) -> dict[str, np.ndarray]:
    """A bounded sample of the champion's training values per feature (what live values are compared with)."""
    import io

    import pandas as pd

    from shared.monitoring.drift import reference_sample_from_frame

    frame = pd.read_parquet(io.BytesIO(ctx.storage.read(paths.MLOPS, paths.prepared_data(model, data_hash)).data))
    return reference_sample_from_frame(frame, spec, size=REFERENCE_ROWS)


def _join(chunk: Any, labels: dict[str, feedback.KnownLabel], spec: TrainingSpec, champion: ModelVersion,
          joined: _Joined) -> list[str]:
    """Collect the chunk's labelled rows; returns their prediction ids."""
    ids = []
    trained_at = champion.created
    classes = {category_string(c): c for c in champion.classes or []}
    for i, pid in enumerate(chunk.prediction_ids):
        known = labels.get(pid)
        if known is None:
            continue
        ids.append(pid)
        if spec.task == "classification":
            label = classes.get(category_string(known.label))
            if label is None:
                joined.unknown_labels += 1
                continue
            joined.proba.append(_proba_row(chunk, i, champion))
        else:
            label = known.label
        at = datetime.fromtimestamp(float(chunk.timestamps[i]), UTC)  # LogChunk: epoch seconds
        joined.y_true.append(label)
        joined.y_pred.append(chunk.predictions[i])
        joined.lags.append(max(0.0, (known.at - at).total_seconds()))
        joined.after_training += at > trained_at
        joined.rows.append({**{f.name: _cell(chunk.features[f.name][i]) for f in spec.features},
                            spec.target: label})
    return ids


def _proba_row(chunk: Any, i: int, champion: ModelVersion) -> np.ndarray:
    order = [category_string(c) for c in champion.classes or []]
    logged = [category_string(c) for c in chunk.classes]
    row = chunk.probabilities[i] if chunk.probabilities is not None else np.full(len(logged), np.nan)
    return np.array([row[logged.index(c)] if c in logged else np.nan for c in order], dtype=np.float64)


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def _live_metrics(spec: TrainingSpec, champion: ModelVersion, joined: _Joined) -> dict[str, float] | None:
    """The validation metrics on the window's labelled rows (None without labels)."""
    from shared.training import compute_metrics

    if not joined.y_true:
        return None
    proba = np.vstack(joined.proba) if joined.proba else None
    if proba is not None and np.isnan(proba).any():
        proba = None
    y_pred = [category_string(p) for p in joined.y_pred] if spec.task == "classification" else joined.y_pred
    y_true = [category_string(t) for t in joined.y_true] if spec.task == "classification" else joined.y_true
    classes = [category_string(c) for c in champion.classes or []] or None
    try:
        metrics = compute_metrics(spec.task, y_true, y_pred, proba, classes)
    except ValueError as exc:  # e.g. probabilities missing from an old log
        log.warning("monitor: live metrics unavailable: %s", exc)
        return None
    return {k: round(float(v), 6) for k, v in metrics.items() if np.isfinite(v)}


def _below_bar(spec: TrainingSpec, live: dict[str, float] | None) -> list[str]:
    found = []
    for metric, bound in spec.quality_bar.items():
        value = (live or {}).get(metric)
        if value is None:
            continue
        if bound.min is not None and value < bound.min:
            found.append(f"{metric} {value:.4g} < min {bound.min:g}")
        if bound.max is not None and value > bound.max:
            found.append(f"{metric} {value:.4g} > max {bound.max:g}")
    return found


# -- closing the loop: retraining on the current data plus labelled production rows ------------------


def _prepare_retraining(ctx: Context, spec: TrainingSpec, model: str, window: _Window, path: str,
                        decision: Decision) -> dict[str, Any]:
    """Prepare (content-addressed, like a drop) the retraining data; the run starts after the report."""
    import io

    import pandas as pd

    from shared.data_checks import check_dataset, prepare
    from shared.pipeline import store_prepared

    current, _ = ctx.storage.read_json(paths.MLOPS, paths.current_data(model))
    base = pd.read_parquet(io.BytesIO(ctx.storage.read(paths.MLOPS, paths.prepared_data(
        model, current["data_hash"])).data))
    production = pd.DataFrame(window.joined.rows, columns=[*spec.feature_names, spec.target])
    frame = pd.concat([base[[*spec.feature_names, spec.target]], production], ignore_index=True)
    report = check_dataset(frame, spec)
    run_id = runs.run_id_for("monitor", path)
    facts = {"run_id": run_id, "report": path, "base_data_hash": current["data_hash"],
             "production_rows": len(production), "trigger": decision.trigger}
    if report is not None:
        return {**facts, "rejected": report.to_dict()}
    prepared = prepare(frame, spec)
    store_prepared(ctx, model, prepared, spec)
    return {**facts, "data_hash": prepared.data_hash, "spec_hash": spec_hash(spec), "rows": prepared.rows}


def _start_retraining(ctx: Context, body: dict[str, Any]) -> None:
    """Record the run and send its training request, unless it was sent before (a redelivery)."""
    retraining, model = body["retraining"], body["model"]
    run_id = retraining["run_id"]
    try:
        run = runs.get(ctx.storage, model, run_id)
    except NotFound:
        run = None
    if run is not None and run.status != RunStatus.PREPARED:
        return  # already past sending (or rejected below)
    if "rejected" in retraining:
        why = "retraining data rejected: " + "; ".join(
            str(p.get("message")) for p in retraining["rejected"].get("problems", [])[:5])
        runs.record(ctx.storage, ctx.clock, model, run_id, RunStatus.REJECTED, detail=why, error=why)
        return
    reason = f"monitoring ({retraining['trigger']}): " + "; ".join(body["decision"]["reasons"])
    runs.record(ctx.storage, ctx.clock, model, run_id, RunStatus.PREPARED, detail=reason,
                data_hash=retraining["data_hash"], spec_hash=retraining["spec_hash"], rows=retraining["rows"])
    lineage = {"report": retraining["report"], "window": body["window"], "trigger": retraining["trigger"],
               "base_data_hash": retraining["base_data_hash"], "production_rows": retraining["production_rows"]}
    request = TrainRequest(run_id=run_id, model=model, data_hash=retraining["data_hash"],
                           spec_hash=retraining["spec_hash"], reason=reason, received_at=ctx.clock.now(),
                           monitoring=lineage)
    ctx.send(paths.TRAIN_QUEUE, request.to_payload())
