"""The closed loop through the local host: drifted, partly labelled traffic -> monitoring -> one guarded
retraining on the current data plus the labelled production rows -> a decision with its reasons."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from devhost.host import DevHost
from examples.datasets import predictive_maintenance
from shared import paths, runs
from shared.lifecycle.records import RunStatus
from shared.messages import MonitorRequest
from shared.simulate import simulate
from shared.storage import AzureStorage
from tests.e2e.support import TERMINAL, champion, drop, example_spec, upload, wait_for_run, wait_for_run_id
from tests.fixtures.devhost_support import wait_for

# min_labels out of reach: this drill is about the drift trigger (the performance one is unit-tested)
MONITORING = {"min_rows": 100, "retrain": {"min_labels": 100_000, "min_new_rows": 50}}


@pytest.fixture(scope="module")
def loop(app_host: DevHost, azurite: Any) -> dict[str, Any]:
    """A predictive-maintenance champion that has scored 400 drifted rows, half of them labelled."""
    from shared.settings import Settings

    store = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    model = f"pm-loop-{uuid.uuid4().hex[:6]}"
    upload(store, example_spec("predictive-maintenance", model, monitoring=MONITORING))
    drop(store, model, "data.csv", predictive_maintenance(n_rows=2000, seed=3))
    assert wait_for_run(store, model, "data.csv").status == RunStatus.PROMOTED
    url = f"http://127.0.0.1:{app_host.port}/api"
    result = simulate(url, app_host.function_key or "", model, rows=400, drift=True, label_share=0.5,
                      dataset="predictive-maintenance")
    assert result.scored == 400 and result.feedback["accepted"] == result.labelled
    wait_for(lambda: _logged_rows(store, model) >= 400, "the prediction log to hold the 400 rows", timeout=30)
    return {"model": model, "storage": store, "labelled": result.labelled, "champion": champion(store, model)}


def _log_lines(storage: AzureStorage, model: str) -> list[dict[str, Any]]:
    lines = []
    for blob in storage.list(paths.PREDICTIONS, f"{model}/"):
        lines += [orjson.loads(line) for line in storage.read(paths.PREDICTIONS, blob.name).data.splitlines() if line]
    return lines


def _logged_rows(storage: AzureStorage, model: str) -> int:
    return len(_log_lines(storage, model))


def _monitor(api: Any, model: str, end: datetime) -> dict[str, Any]:
    response = api("POST", f"registry/models/{model}/monitor", key="master", json={"window_end": end.isoformat()})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_loop_closes_once_with_every_decision_recorded(api, loop):
    model, storage = loop["model"], loop["storage"]
    # a window's end is exclusive and in whole seconds: the next second holds rows logged in this one too
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    runs_before = {r.run_id for r in runs.list_runs(storage, model)}

    first = _monitor(api, model, now)
    assert first["window"]["rows"] == 400 and first["dataset_drift"] is True
    assert first["decision"]["retrain"] is False and "needs 2" in " ".join(first["decision"]["reasons"])
    assert first["labelled_rows"] == loop["labelled"]
    assert first["label_coverage"] == pytest.approx(loop["labelled"] / 400, abs=1e-6)
    assert first["label_lag_seconds"] is not None and first["label_lag_seconds"] >= 0
    # the live metric equals a direct computation on the same joined rows
    expected = _direct_roc_auc(storage, model)
    assert first["live_metrics"]["roc_auc"] == pytest.approx(expected, abs=1e-6)

    second = _monitor(api, model, now + timedelta(seconds=1))
    assert second["decision"]["retrain"] is True and second["decision"]["trigger"] == "drift"
    assert "dataset drift in 2/2" in " ".join(second["decision"]["reasons"])
    retraining = second["retraining"]
    assert retraining["production_rows"] == loop["labelled"] and retraining["base_data_hash"]
    run = wait_for_run_id(storage, model, retraining["run_id"], timeout=180)
    assert run.status in TERMINAL and run.status in (RunStatus.PROMOTED, RunStatus.REJECTED,
                                                     RunStatus.PENDING_APPROVAL), run
    assert run.version is not None, run.to_json()
    version = api("GET", f"registry/models/{model}/versions/{run.version}").json()
    assert version["decision"]["reasons"]  # promoted or not, the gate says why
    assert version["lineage"]["monitoring"]["report"].endswith(".json")
    assert version["lineage"]["monitoring"]["production_rows"] == loop["labelled"]

    third = _monitor(api, model, now + timedelta(seconds=2))
    assert third["decision"]["retrain"] is False
    assert any("cooldown until" in r for r in third["decision"]["reasons"]), third["decision"]
    # three windows, exactly one retraining run
    assert {r.run_id for r in runs.list_runs(storage, model)} - runs_before == {retraining["run_id"]}

    listed = api("GET", f"registry/models/{model}/monitoring").json()["reports"]
    assert [r["window"]["end"] for r in listed][:3] == [third["window"]["end"], second["window"]["end"],
                                                       first["window"]["end"]]
    assert api("GET", f"registry/models/{model}/monitoring/latest").json()["window"]["end"] == third["window"]["end"]


def test_redelivered_monitor_messages_make_one_report_and_no_second_retraining(api, loop, app_host):
    model, storage = loop["model"], loop["storage"]
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    runs_before = {r.run_id for r in runs.list_runs(storage, model)}
    message = MonitorRequest(model=model, window_end=end).to_payload()
    for _ in range(3):
        storage.enqueue(paths.MONITOR_QUEUE, message)

    def reports_for_end() -> list[str]:
        stamp = end.strftime("%Y%m%dT%H%M%SZ")
        return [b.name for b in storage.list(paths.MLOPS, paths.monitoring_prefix(model)) if stamp in b.name]

    wait_for(lambda: reports_for_end() or None, "the redelivered window's report", timeout=60)
    wait_for(lambda: not storage.peek(paths.MONITOR_QUEUE) or None, "the monitor queue to drain", timeout=60)
    assert len(reports_for_end()) == 1
    new_runs = {r.run_id for r in runs.list_runs(storage, model)} - runs_before
    assert not new_runs, new_runs  # inside the cooldown: no retraining, however often it is delivered


def _direct_roc_auc(storage: AzureStorage, model: str) -> float:
    """ROC AUC of the logged champion probabilities against the labels, computed here from raw blobs."""
    labels: dict[str, Any] = {}
    for blob in storage.list(paths.MLOPS, paths.feedback_prefix(model)):
        entries, _ = storage.read_json(paths.MLOPS, blob.name)
        labels.update({pid: entry["label"] for pid, entry in entries.items()})
    y_true, scores = [], []
    for line in _log_lines(storage, model):
        if line["prediction_id"] in labels:
            y_true.append(int(labels[line["prediction_id"]]))
            probabilities = line["outputs"]["probabilities"]
            scores.append(float(probabilities.get("1", probabilities.get(1, np.nan))))
    # rounded to 1e-6 as validation does, so ONNX float32 ties rank alike (shared/training.compute_metrics)
    return float(roc_auc_score(y_true, np.round(scores, 6)))


def test_a_window_that_fails_every_delivery_ends_in_a_failed_report_with_its_reason(api, loop):
    """The champion's training profile is unreadable: each delivery fails, the host moves the message to the
    poison queue after maxDequeueCount, and monitor_poison writes the window's report as failed, with why."""
    model, storage = loop["model"], loop["storage"]
    record, _ = storage.read_json(paths.MLOPS, paths.version_record(model, champion(storage, model)))
    profile = paths.prepared_profile(model, record["lineage"]["data_hash"])
    original = storage.read(paths.MLOPS, profile).data
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=7)
    runs_before = {r.run_id for r in runs.list_runs(storage, model)}
    storage.write(paths.MLOPS, profile, b"{not json")
    try:
        storage.enqueue(paths.MONITOR_QUEUE, MonitorRequest(model=model, window_end=end).to_payload())
        stamp = end.strftime("%Y%m%dT%H%M%SZ")

        def report() -> dict[str, Any] | None:
            names = [b.name for b in storage.list(paths.MLOPS, paths.monitoring_prefix(model)) if stamp in b.name]
            return storage.read_json(paths.MLOPS, names[0])[0] if names else None

        failed = wait_for(report, "the failed window's report", timeout=90)
    finally:
        storage.write(paths.MLOPS, profile, original)
    assert failed["status"] == "failed" and failed["attempts"] == 5, failed
    assert failed["reason"].startswith("internal error (JSONDecodeError)"), failed["reason"]
    assert failed["decision"]["retrain"] is False and "failed on every delivery" in failed["decision"]["reasons"][0]
    latest = api("GET", f"registry/models/{model}/monitoring")
    assert latest.status_code == 200 and any(r.get("status") == "failed" for r in latest.json()["reports"])
    wait_for(lambda: not storage.peek(paths.poison(paths.MONITOR_QUEUE)) or None, "the poison queue to drain",
             timeout=30)
    assert {r.run_id for r in runs.list_runs(storage, model)} == runs_before
