"""The training pipeline's stages over storage: prepare -> train -> export -> validate -> promote.

Each stage is idempotent (every trigger may fire twice) and records what it did in the run
history; the functions/ adapters only decode the trigger and call one function here.
"""
from __future__ import annotations

import hashlib
import io
import logging
from typing import Any

import pandas as pd

from shared import idempotency, paths, registry, runs
from shared.clock import iso_now
from shared.data_checks import check_dataset, load_dataset, prepare
from shared.errors import Conflict, DataRejected, NotFound
from shared.messages import RetrainRequest, StageRequest, TrainRequest
from shared.onnx_export import ParityReport, export_onnx, measure_latency, onnx_facts, parity_check, run_onnx
from shared.profile import profile_dataset
from shared.settings import Settings
from shared.spec import TrainingSpec
from shared.storage import AzureStorage
from shared.training import (
    compute_metrics, library_versions, pipeline_from_bytes, pipeline_to_bytes, target_array, train,
)
from shared.validation import decide

log = logging.getLogger("mlops.pipeline")

PROMOTION_ATTEMPTS = 5


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def _to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


# -- 1. prepare ---------------------------------------------------------------------------------


def prepare_drop(storage: AzureStorage, blob_path: str, data: bytes, etag: str) -> dict[str, Any]:
    """Validate a dropped dataset; reject with a report or store it prepared and request training.

    `blob_path` is `<model>/<file>` inside the datasets container; the original is never touched.
    """
    model, _, name = blob_path.partition("/")
    run_id = runs.run_id_for("drop", blob_path, etag)
    runs.record(storage, model, run_id, "received", source_blob=f"{paths.DATASETS}/{blob_path}", source_etag=etag)
    try:
        spec, digest = registry.current_spec(storage, model)
    except NotFound as exc:
        return _reject_data(storage, model, run_id, blob_path, {
            "status": "rejected", "rows": None, "columns": [],
            "problems": [{"column": None, "check": "spec", "message": exc.message, "count": None}],
        })
    try:
        df = load_dataset(data, name)
    except DataRejected as exc:
        return _reject_data(storage, model, run_id, blob_path, exc.details or {"problems": [{"message": exc.message}]})
    report = check_dataset(df, spec)
    if report is not None:
        return _reject_data(storage, model, run_id, blob_path, report.to_dict() if hasattr(report, "to_dict") else report)

    prepared = prepare(df, spec)
    if not storage.exists(paths.MLOPS, paths.prepared_data(model, prepared.data_hash)):
        storage.write(paths.MLOPS, paths.prepared_data(model, prepared.data_hash), prepared.parquet_bytes)
        storage.write_json(paths.MLOPS, paths.prepared_profile(model, prepared.data_hash), profile_dataset(prepared.frame, spec))
    else:
        log.info("prepare: data (model=%s, data_hash=%s) was prepared before; training will deduplicate", model, prepared.data_hash[:12])
    source = f"{paths.DATASETS}/{blob_path}"
    storage.write_json(paths.MLOPS, paths.current_data(model), {
        "data_hash": prepared.data_hash, "source_blob": source, "source_etag": etag, "at": iso_now(),
    })
    request = TrainRequest(run_id=run_id, model=model, data_hash=prepared.data_hash, spec_hash=digest, source_blob=source)
    storage.enqueue(paths.TRAIN_QUEUE, request.to_payload())
    runs.record(storage, model, run_id, "prepared", data_hash=prepared.data_hash, spec_hash=digest, rows=len(prepared.frame))
    return {"outcome": "prepared", "run_id": run_id, "data_hash": prepared.data_hash}


def _reject_data(storage: AzureStorage, model: str, run_id: str, blob_path: str, report: dict[str, Any]) -> dict[str, Any]:
    report = {**report, "source_blob": f"{paths.DATASETS}/{blob_path}", "run_id": run_id, "at": iso_now()}
    storage.write_json(paths.REJECTED, paths.rejection_report(blob_path), report)
    problems = report.get("problems") or []
    summary = "; ".join(str(p.get("message")) for p in problems[:5])
    runs.record(storage, model, run_id, "rejected", detail=f"data rejected: {summary}",
                rejection_report=f"{paths.REJECTED}/{paths.rejection_report(blob_path)}")
    log.warning("prepare: rejected %s/%s: %s", paths.DATASETS, blob_path, summary)
    return {"outcome": "rejected", "run_id": run_id, "problems": problems}


# -- retrain ------------------------------------------------------------------------------------


def request_retrain(storage: AzureStorage, request: RetrainRequest) -> TrainRequest:
    """Turn a retrain request into a training request on the model's current data and spec."""
    try:
        current, _ = storage.read_json(paths.MLOPS, paths.current_data(request.model))
    except NotFound:
        raise NotFound(f"model (name={request.model}) has no accepted data yet; drop a dataset first") from None
    digest = request.spec_hash or registry.current_spec(storage, request.model)[1]
    run_id = request.run_id or runs.new_run_id()
    train_request = TrainRequest(
        run_id=run_id, model=request.model, data_hash=current["data_hash"], spec_hash=digest,
        source_blob=current.get("source_blob"), git=request.git, reason=request.reason,
    )
    runs.record(storage, request.model, run_id, "queued", detail=f"{request.reason}: training on data {current['data_hash'][:12]}",
                source_blob=current.get("source_blob"))
    storage.enqueue(paths.TRAIN_QUEUE, train_request.to_payload())
    return train_request


# -- 2. train -----------------------------------------------------------------------------------


def train_candidate(storage: AzureStorage, request: TrainRequest) -> dict[str, Any]:
    """Train once per (data hash, spec hash); store the candidate as a new version."""
    model = request.model
    key = f"{model}-{request.data_hash[:20]}-{request.spec_hash[:20]}"
    claim = idempotency.claim(storage, "train", key)
    if not claim.acquired:
        result = claim.result or {}
        detail = (f"same data (hash={request.data_hash[:12]}) and spec (hash={request.spec_hash[:12]}) "
                  f"already trained as version {result.get('version')} by run {result.get('run_id')}; nothing to do")
        if result.get("run_id") != request.run_id:
            runs.record(storage, model, request.run_id, "duplicate", detail=detail, version=result.get("version"))
        log.info("train: %s", detail)
        return {"outcome": "duplicate", **result}
    try:
        spec = registry.spec_at(storage, model, request.spec_hash)
        frame = _parquet(storage.read(paths.MLOPS, paths.prepared_data(model, request.data_hash)).data)
        result = train(frame, spec)
        version = (claim.notes or {}).get("version")
        if version is None:
            version = registry.allocate_version(storage, model, {"status": "training", "run_id": request.run_id})
            idempotency.note(storage, "train", key, version=version)
        pipeline_blob = pipeline_to_bytes(result.pipeline)
        holdout_blob = _to_parquet(result.holdout)
        artifacts = {
            "pipeline": {"path": paths.artifact(model, version, "pipeline.joblib"), "sha256": _sha256(pipeline_blob)},
            "holdout": {"path": paths.artifact(model, version, "holdout.parquet"), "sha256": _sha256(holdout_blob)},
        }
        storage.write(paths.MLOPS, artifacts["pipeline"]["path"], pipeline_blob)
        storage.write(paths.MLOPS, artifacts["holdout"]["path"], holdout_blob)
        lineage = {
            "source_blob": request.source_blob, "data_hash": request.data_hash, "spec_hash": request.spec_hash,
            "git": request.git.to_payload() if request.git else None, "seed": spec.split.seed,
            "estimator": spec.estimator.type, "libraries": library_versions(), "reason": request.reason,
            "train_rows": result.train_rows, "holdout_rows": result.holdout_rows,
        }
        registry.update_version(storage, model, version, lambda r: {
            **r, "status": "trained", "run_id": request.run_id, "lineage": lineage, "task": spec.task,
            "classes": result.classes,
            "metrics": {"sklearn_holdout": result.metrics}, "fit_seconds": result.fit_seconds,
            "artifacts": artifacts, "trained_at": iso_now(),
        })
        idempotency.complete(storage, "train", key, {"version": version, "run_id": request.run_id})
    except Exception:
        idempotency.release(storage, "train", key)
        raise
    storage.enqueue(paths.EXPORT_QUEUE, StageRequest(run_id=request.run_id, model=model, version=version).to_payload())
    runs.record(storage, model, request.run_id, "trained", version=version, fit_seconds=result.fit_seconds)
    log.info("train: model=%s version=%s fit=%.2fs metrics=%s", model, version, result.fit_seconds, result.metrics)
    return {"outcome": "trained", "version": version, "fit_seconds": result.fit_seconds}


# -- 3. export ----------------------------------------------------------------------------------


def export_candidate(storage: AzureStorage, settings: Settings, request: StageRequest) -> dict[str, Any]:
    """Convert a candidate to ONNX and gate it on parity with the sklearn pipeline."""
    model, version = request.model, request.version
    record = registry.get_version(storage, model, version)
    if record.get("onnx") or record.get("status") not in ("trained",):
        log.info("export: model=%s version=%s already %s; passing on", model, version, record.get("status"))
        if record.get("onnx") and record.get("status") == "exported":
            storage.enqueue(paths.VALIDATE_QUEUE, request.to_payload())
        return {"outcome": "duplicate", "status": record.get("status")}
    spec = registry.spec_at(storage, model, record["lineage"]["spec_hash"])
    pipeline = pipeline_from_bytes(storage.read(paths.MLOPS, record["artifacts"]["pipeline"]["path"]).data)
    holdout = _parquet(storage.read(paths.MLOPS, record["artifacts"]["holdout"]["path"]).data)
    onnx_bytes = export_onnx(pipeline, spec, holdout.head(5))
    parity = parity_check(
        pipeline, onnx_bytes, holdout, spec,
        max_abs_diff=settings.parity_max_abs_diff, min_label_agreement=settings.parity_min_label_agreement,
    )
    parity_doc = parity.to_dict()
    if not parity.passed:
        reasons = [f"rejected: ONNX parity gate failed: {r}" for r in parity.reasons]
        registry.update_version(storage, model, version, lambda r: {
            **r, "status": "rejected", "parity": parity_doc, "decision": {"outcome": "reject", "reasons": reasons},
        })
        runs.record(storage, model, request.run_id, "rejected", detail="; ".join(reasons), version=version)
        return {"outcome": "rejected", "reasons": reasons}
    facts = onnx_facts(onnx_bytes)
    onnx_path = paths.artifact(model, version, "model.onnx")
    storage.write(paths.MLOPS, onnx_path, onnx_bytes)
    registry.update_version(storage, model, version, lambda r: {
        **r, "status": "exported", "parity": parity_doc, "exported_at": iso_now(),
        "onnx": {**facts, "path": onnx_path},
        "artifacts": {**r["artifacts"], "onnx": {"path": onnx_path, "sha256": facts["sha256"]}},
    })
    storage.enqueue(paths.VALIDATE_QUEUE, request.to_payload())
    runs.record(storage, model, request.run_id, "exported", version=version, parity=parity_doc)
    return {"outcome": "exported", "parity": parity_doc, "onnx": facts}


# -- 4. validate and 5. promote -----------------------------------------------------------------


def _onnx_bytes(storage: AzureStorage, record: dict[str, Any]) -> bytes:
    return storage.read(paths.MLOPS, record["onnx"]["path"]).data


def _onnx_metrics(onnx_bytes: bytes, record: dict[str, Any], holdout: pd.DataFrame, spec: TrainingSpec) -> dict[str, float]:
    labels, proba = run_onnx(onnx_bytes, holdout, spec)
    return compute_metrics(spec.task, target_array(holdout, spec), labels, proba, record.get("classes"))


def validate_candidate(storage: AzureStorage, request: StageRequest) -> dict[str, Any]:
    """Decide promote / reject / pending_approval with every reason spelled out, then apply it."""
    model, version = request.model, request.version
    record = registry.get_version(storage, model, version)
    if record.get("status") != "exported":
        log.info("validate: model=%s version=%s already %s; nothing to do", model, version, record.get("status"))
        return {"outcome": "duplicate", "status": record.get("status")}
    spec = registry.spec_at(storage, model, record["lineage"]["spec_hash"])
    holdout = _parquet(storage.read(paths.MLOPS, record["artifacts"]["holdout"]["path"]).data)
    onnx_bytes = _onnx_bytes(storage, record)
    challenger = _onnx_metrics(onnx_bytes, record, holdout, spec)
    latency = measure_latency(onnx_bytes, holdout.head(1), spec)
    parity = ParityReport.from_dict(record["parity"])
    for _ in range(PROMOTION_ATTEMPTS):
        aliases, etag = registry.get_aliases(storage, model)
        champion_version = aliases.get(registry.CHAMPION)
        champion_metrics = None
        if champion_version is not None:
            champion_record = registry.get_version(storage, model, int(champion_version))
            champion_metrics = _onnx_metrics(_onnx_bytes(storage, champion_record), champion_record, holdout, spec)
        decision = decide(spec, challenger, champion_metrics, latency["p99_ms"], parity)
        outcome = decision.outcome
        if outcome == "promote":
            try:
                registry.set_champion(storage, model, version, expected_etag=etag)
            except Conflict:
                log.info("validate: aliases of %s changed during validation of version %s; deciding again", model, version)
                continue
        status = {"promote": "promoted", "reject": "rejected", "pending_approval": "pending_approval"}[outcome]
        decision_doc = {**decision.to_dict(), "champion_version": champion_version, "champion_metrics": champion_metrics, "at": iso_now()}
        registry.update_version(storage, model, version, lambda r: {
            **r, "status": status, "metrics": {**r.get("metrics", {}), "onnx_holdout": challenger},
            "latency": latency, "decision": decision_doc, "validated_at": iso_now(),
        })
        runs.record(storage, model, request.run_id, "validated", version=version, decision=decision_doc)
        runs.record(storage, model, request.run_id, status, detail="; ".join(decision.reasons), version=version)
        log.info("validate: model=%s version=%s -> %s (%s)", model, version, status, "; ".join(decision.reasons))
        return {"outcome": status, "reasons": decision.reasons}
    raise Conflict(f"model (name={model}) champion kept changing while validating version {version}; retry")


def approve(storage: AzureStorage, model: str, version: int, *, by: str = "admin") -> dict[str, Any]:
    """Promote a version that waits for manual approval (ETag-safe against concurrent flips)."""
    record = registry.get_version(storage, model, version)
    if record.get("status") != "pending_approval":
        raise Conflict(f"model version (name={model}, version={version}) is {record.get('status')}, not pending_approval")
    for _ in range(PROMOTION_ATTEMPTS):
        _, etag = registry.get_aliases(storage, model)
        try:
            flip = registry.set_champion(storage, model, version, expected_etag=etag)
            break
        except Conflict:
            continue
    else:
        raise Conflict(f"aliases of model (name={model}) kept changing; approve again")
    registry.update_version(storage, model, version, lambda r: {**r, "status": "promoted", "approved_by": by, "approved_at": iso_now()})
    if record.get("run_id"):
        runs.record(storage, model, record["run_id"], "promoted", detail=f"approved by {by}", version=version)
    return {"champion": flip.champion, "previous": flip.previous}


def reject(storage: AzureStorage, model: str, version: int, *, by: str = "admin", reason: str = "") -> dict[str, Any]:
    """Reject a version waiting for approval."""
    record = registry.get_version(storage, model, version)
    if record.get("status") != "pending_approval":
        raise Conflict(f"model version (name={model}, version={version}) is {record.get('status')}, not pending_approval")
    why = f"rejected by {by}" + (f": {reason}" if reason else "")
    registry.update_version(storage, model, version, lambda r: {**r, "status": "rejected", "rejected_by": by, "rejected_reason": why})
    if record.get("run_id"):
        runs.record(storage, model, record["run_id"], "rejected", detail=why, version=version)
    return {"status": "rejected", "reason": why}


def fail_run_from_poison(storage: AzureStorage, queue: str, payload: dict[str, Any], dequeue_count: int) -> str | None:
    """Mark the run of a message that ended in a poison queue as failed, with the last error."""
    model, run_id = payload.get("model"), payload.get("run_id")
    if not (model and run_id):
        log.error("poison: message in %s has no model/run_id: %s", paths.poison(queue), payload)
        return None
    error = runs.last_error(storage, model, run_id) or "unknown error"
    reason = f"message moved to {paths.poison(queue)} after repeated failures; last error: {error}"
    runs.record(storage, model, run_id, "failed", error=reason)
    return reason
