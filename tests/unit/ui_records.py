"""Registry records for the model page tests and bench/bench_pages.py, written straight to storage.

seed_model stores a spec, `versions` versions (rejected, superseded, one champion, one pending), an
alias history, one run per version, the champion's holdout charts and, optionally, a monitoring report
with the training profile it was measured against: what the real pipeline leaves, without training.
"""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from devhost.azurite import ROOT
from examples.datasets import diabetes
from shared import paths, registry
from shared.contract import signature_from
from shared.holdout_charts import holdout_charts
from shared.lifecycle.records import (
    AliasAction,
    Aliases,
    Artifact,
    ModelVersion,
    RunEvent,
    RunRecord,
    RunStatus,
    StatusChange,
    VersionStatus,
    with_change,
)
from shared.spec import parse_spec
from shared.storage import Storage

SPECS = ROOT / "examples" / "specs"
V = VersionStatus
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def spec_dict(name: str, **changes: Any) -> dict[str, Any]:
    spec = yaml.safe_load((SPECS / "diabetes.yaml").read_text())
    spec.update(name=name, **changes)
    return dict(spec)


def seed_model(storage: Storage, name: str, versions: int = 5, *, monitored: bool = False,
               **spec_changes: Any) -> dict[str, Any]:
    """A regression model with `versions` versions: every 7th rejected, the last pending, the one before it champion."""
    spec = spec_dict(name, **spec_changes)
    _, digest = registry.upload_spec(storage, yaml.safe_dump(spec).encode(), "spec.yaml")
    signature = signature_from(parse_spec(yaml.safe_dump(spec))).to_json()
    aliases = Aliases()
    champion = versions - 1 if versions > 1 else 1
    for number in range(1, versions + 1):
        status = _status(number, versions, champion)
        if status in (V.SUPERSEDED, V.PROMOTED):
            aliases = with_change(aliases, AliasAction.PROMOTE, number, at=_at(number), by="pipeline",
                                  reason=f"passed: rmse {_rmse(number):.4g} <= bar 60", run_id=_run_id(number))
        record = _version(storage, name, number, status, digest, charts=number == champion)
        record = record.model_copy(update={"signature": signature})
        storage.write_json(paths.MLOPS, paths.version_record(name, number), record.to_json())
        storage.write_json(paths.MLOPS, paths.run_record(name, _run_id(number)), _run(name, number, status).to_json())
    storage.write_json(paths.MLOPS, paths.aliases(name), aliases.model_copy(update={"synced": True}).to_json())
    if monitored:
        _monitoring(storage, name, champion)
    return {"spec_hash": digest, "champion": champion if versions > 1 else 1}


def _status(number: int, versions: int, champion: int) -> VersionStatus:
    if number == versions and versions > 1:
        return V.PENDING_APPROVAL
    if number == champion:
        return V.PROMOTED
    return V.REJECTED if number % 7 == 0 else V.SUPERSEDED


def _at(number: int) -> datetime:
    return T0 + timedelta(hours=number)


def _rmse(number: int) -> float:
    return 60.0 - 5.0 * (number % 5) / 4


def _run_id(number: int) -> str:
    return f"run-{number:06d}"


def _version(storage: Storage, name: str, number: int, status: VersionStatus, digest: str,
             *, charts: bool) -> ModelVersion:
    reasons = ["passed: parity max relative prediction diff 1e-16 <= 1e-05 (max abs diff 1e-14, rows=89)",
               f"{'rejected' if status == V.REJECTED else 'passed'}: rmse {_rmse(number):.4g} <= bar 60",
               "passed: r2 0.45 >= bar 0.35", "passed: latency p99 0.7 ms <= budget 50 ms"]
    if number > 1:
        reasons.insert(3, f"passed: rmse {_rmse(number):.4g} vs champion {_rmse(number - 1):.4g} "
                          "(allowed regression 0.5)")
    if status == V.PENDING_APPROVAL:
        reasons.append("pending: approval=manual; every check passed, waiting for a reviewer")
    artifacts = {"onnx": Artifact(path=f"models/{name}/artifacts/{number:06d}/model.onnx", sha256="0" * 64)}
    if charts:
        artifacts["holdout_charts"] = _charts(storage, name, number)
    history = [StatusChange(status=s, at=_at(number), by="pipeline", reason=f"moved to {s}", from_status=f)
               for f, s in (("training", "trained"), ("trained", "exported"), ("exported", str(status)))]
    return ModelVersion(
        model=name, version=number, status=status, created=_at(number), status_at=_at(number),
        run_id=_run_id(number), key=f"{number:064x}/{digest}", task="regression",
        lineage={"data_hash": f"{number:064x}", "spec_hash": digest, "source_blob": f"datasets/{name}/d{number}.csv",
                 "git": {"provider": "github", "repository": "contoso/ml-specs", "ref": "refs/heads/main",
                         "commit": hashlib.sha1(str(number).encode()).hexdigest(), "pusher": "ds"},
                 "libraries": {"sklearn": "1.9.1", "onnxruntime": "1.32.0"}, "estimator": "ridge", "seed": 42},
        metrics={"onnx_holdout": {"rmse": _rmse(number), "mae": 44.0, "r2": 0.45}},
        artifacts=artifacts,
        decision={"outcome": {V.REJECTED: "reject", V.PENDING_APPROVAL: "pending_approval"}.get(status, "promote"),
                  "reasons": reasons, "champion_version": number - 1 if number > 1 else None},
        history=history)


def _charts(storage: Storage, name: str, number: int) -> Artifact:
    frame = diabetes()
    actual = frame["progression"].to_numpy(float)
    data = json.dumps(holdout_charts("regression", actual, actual * 0.8 + 30, None, None)).encode()
    path = f"models/{name}/artifacts/{number:06d}/holdout-charts.json"
    storage.write(paths.MLOPS, path, data)
    return Artifact(path=path, sha256=hashlib.sha256(data).hexdigest())


def _run(name: str, number: int, status: VersionStatus) -> RunRecord:
    steps = [RunStatus.RECEIVED, RunStatus.PREPARED, RunStatus.TRAINED, RunStatus.EXPORTED, RunStatus(str(status))]
    return RunRecord(run_id=_run_id(number), model=name, created=_at(number), status=RunStatus(str(status)),
                     version=number, timeline=[RunEvent(status=s, at=_at(number)) for s in steps],
                     error="rejected: rmse over the bar" if status == V.REJECTED else None)


def _monitoring(storage: Storage, name: str, version: int) -> None:
    profile = {"features": {"bmi": {"kind": "numeric", "bin_edges": [20.0, 25.0, 30.0], "bin_counts": [10, 40, 30, 20]},
                            "sex": {"kind": "categorical", "counts": {"1": 50, "2": 50}}}}
    storage.write_json(paths.MLOPS, paths.prepared_profile(name, f"{version:064x}"), profile)
    report = {
        "model": name, "version": version, "created": "2026-11-20T12:00:00+00:00",
        "window": {"start": "2026-11-19T12:00:00+00:00", "end": "2026-11-20T12:00:00+00:00", "rows": 1000},
        "status": "ok", "dataset_drift": True, "drift_share": 0.5,
        "features": {
            "bmi": {"kind": "numeric", "status": "ok", "drifted": True, "null_rate": 0.0, "out_of_range_rate": 0.01,
                    "statistics": [{"name": "wasserstein_normalised", "value": 0.4, "threshold": 0.1, "drifted": True},
                                   {"name": "psi", "value": 0.5, "threshold": 0.2, "drifted": True}],
                    "live_bin_counts": [100, 200, 300, 400]},
            "sex": {"kind": "categorical", "status": "ok", "drifted": False, "null_rate": 0.0, "unseen_share": 0.0,
                    "statistics": [{"name": "jensen_shannon", "value": 0.01, "threshold": 0.1, "drifted": False}]},
        },
        "prediction_drift": {"status": "ok", "drifted": False, "statistics": []},
        "live_metrics": {"rmse": 70.0}, "validation_metrics": {"rmse": 55.0},
        "quality_bar": {"rmse": {"max": 60.0, "min": None}}, "label_coverage": 0.25, "labelled_rows": 250,
        "label_lag_seconds": 3600.0,
        "decision": {"retrain": False, "reasons": ["dataset drift in 1/1 of the last 3 windows (needs 2)"]},
    }
    storage.write_json(paths.MLOPS, paths.monitoring_report(name, "20261120T120000Z", version, 24), report)
