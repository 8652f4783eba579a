"""The training pipeline end to end through the local host: a data drop becomes a champion."""
from __future__ import annotations

import threading
import uuid

import pytest

from examples.datasets import breast_cancer, diabetes
from shared import paths, registry, runs
from shared.errors import Conflict
from shared.messages import TrainRequest
from tests.e2e.support import champion, drop, example_spec, upload, wait_for_run
from tests.fixtures.devhost_support import wait_for


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _host(app_host):  # type: ignore[no-untyped-def]
    """Every test here needs the app running."""
    return app_host


def test_a_drop_becomes_a_champion_with_complete_lineage(storage):
    model = name("bc")
    spec_hash = upload(storage, example_spec("breast-cancer", model))
    drop(storage, model, "data.csv", breast_cancer())

    run = wait_for_run(storage, model, "data.csv")

    assert run["status"] == "promoted", run
    timeline = [e["status"] for e in run["timeline"]]
    for step in ("received", "prepared", "trained", "exported", "validated", "promoted"):
        assert step in timeline
    version = registry.get_version(storage, model, champion(storage, model))
    lineage = version["lineage"]
    assert lineage["source_blob"] == f"datasets/{model}/data.csv"
    assert lineage["spec_hash"] == spec_hash and len(lineage["data_hash"]) == 64
    assert lineage["seed"] == 42 and set(lineage["libraries"]) >= {"sklearn", "skl2onnx", "onnx", "onnxruntime"}
    assert version["metrics"]["onnx_holdout"]["roc_auc"] >= 0.95
    assert version["parity"]["passed"] and version["parity"]["max_abs_diff"] <= 1e-5
    assert version["latency"]["p99_ms"] > 0
    assert version["onnx"]["sha256"] == version["artifacts"]["onnx"]["sha256"]
    assert any("no champion" in r for r in version["decision"]["reasons"])
    onnx = storage.read(paths.MLOPS, version["onnx"]["path"]).data
    assert len(onnx) == version["onnx"]["size_bytes"]


def test_bad_data_gets_a_report_next_to_it_and_nothing_trains(storage):
    model = name("bad")
    upload(storage, example_spec("breast-cancer", model))
    frame = breast_cancer().drop(columns=["mean_radius"])
    frame.loc[:10, "mean_texture"] = -5.0
    original = drop(storage, model, "broken.csv", frame)
    before = storage.read(paths.DATASETS, original)

    run = wait_for_run(storage, model, "broken.csv")

    assert run["status"] == "rejected"
    report, _ = storage.read_json(paths.REJECTED, paths.rejection_report(original))
    checks = {(p["column"], p["check"]) for p in report["problems"]}
    assert ("mean_radius", "missing_column") in checks
    out_of_range = [p for p in report["problems"] if p["check"] == "out_of_range"]
    assert out_of_range and out_of_range[0]["count"] == 11
    assert registry.list_versions(storage, model) == []
    after = storage.read(paths.DATASETS, original)
    assert after.data == before.data and after.etag == before.etag


def test_the_same_data_dropped_twice_trains_once(storage):
    model = name("dup")
    upload(storage, example_spec("diabetes", model))
    drop(storage, model, "first.csv", diabetes())
    assert wait_for_run(storage, model, "first.csv")["status"] == "promoted"

    drop(storage, model, "second.csv", diabetes())
    run = wait_for_run(storage, model, "second.csv")

    assert run["status"] == "duplicate"
    assert "already trained as version 1" in run["timeline"][-1]["detail"]
    assert [v["version"] for v in registry.list_versions(storage, model)] == [1]


def test_a_worse_model_is_rejected_with_reasons_and_the_champion_stays(storage, api):
    model = name("worse")
    upload(storage, example_spec("diabetes", model, quality_bar={"rmse": {"max": 1000}}))
    drop(storage, model, "good.csv", diabetes())
    assert wait_for_run(storage, model, "good.csv")["status"] == "promoted"

    upload(storage, example_spec("diabetes", model, quality_bar={"rmse": {"max": 1000}},
                                 estimator={"type": "ridge", "params": {"alpha": 10000.0}}))
    response = api("POST", f"registry/models/{model}/retrain", key="master", json={"reason": "heavier regularisation"})
    assert response.status_code == 202, response.text
    run = wait_for(lambda: (r := runs.get(storage, model, response.json()["run_id"]))["status"] in {"rejected", "promoted", "failed"} and r,
                   "the retrain run to finish", timeout=120)

    assert run["status"] == "rejected", run
    reasons = registry.get_version(storage, model, run["version"])["decision"]["reasons"]
    assert any(r.startswith("rejected: rmse") and "worse than champion" in r for r in reasons), reasons
    assert champion(storage, model) == 1


def test_manual_approval_waits_then_promotes_and_reject_keeps_the_champion(storage, api):
    model = name("manual")
    upload(storage, example_spec("diabetes", model, approval="manual", comparison={"rmse": {"max_regression": 100.0}}))
    drop(storage, model, "a.csv", diabetes())
    run = wait_for_run(storage, model, "a.csv")
    assert run["status"] == "pending_approval" and champion(storage, model) is None

    assert api("POST", f"registry/models/{model}/versions/1/approve", key="function").status_code == 401
    approved = api("POST", f"registry/models/{model}/versions/1/approve", key="master", json={"by": "reviewer"})
    assert approved.status_code == 200, approved.text
    assert champion(storage, model) == 1
    assert registry.get_version(storage, model, 1)["approved_by"] == "reviewer"
    again = api("POST", f"registry/models/{model}/versions/1/approve", key="master")
    assert again.status_code == 409 and "not pending_approval" in again.json()["message"]

    drop(storage, model, "b.csv", diabetes().sample(frac=0.9, random_state=1))
    assert wait_for_run(storage, model, "b.csv")["status"] == "pending_approval"
    rejected = api("POST", f"registry/models/{model}/versions/2/reject", key="master", json={"reason": "not now"})
    assert rejected.status_code == 200 and registry.get_version(storage, model, 2)["status"] == "rejected"
    assert champion(storage, model) == 1


def test_rollback_restores_the_previous_champion(storage, api):
    model = name("roll")
    upload(storage, example_spec("diabetes", model, comparison={"rmse": {"max_regression": 100.0}}))
    drop(storage, model, "a.csv", diabetes())
    assert wait_for_run(storage, model, "a.csv")["status"] == "promoted"
    assert api("POST", f"registry/models/{model}/rollback", key="master").status_code == 400  # nothing to roll back to
    drop(storage, model, "b.csv", diabetes().sample(frac=0.95, random_state=3))
    assert wait_for_run(storage, model, "b.csv")["status"] == "promoted"
    assert champion(storage, model) == 2

    response = api("POST", f"registry/models/{model}/rollback", key="master")

    assert response.status_code == 200 and response.json() == {"champion": 1, "previous": 2}
    assert champion(storage, model) == 1
    assert registry.get_version(storage, model, 2)["status"] == "rolled_back"
    listed = api("GET", f"registry/models/{model}/versions").json()
    assert listed["aliases"]["champion"] == 1 and len(listed["versions"]) == 2


def test_concurrent_promotions_have_exactly_one_winner(storage):
    model = name("race")
    upload(storage, example_spec("diabetes", model))
    for version in (1, 2):
        registry.allocate_version(storage, model, {"status": "exported"})
    _, etag = registry.get_aliases(storage, model)
    outcomes: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def promote(version: int) -> None:
        barrier.wait()
        try:
            registry.set_champion(storage, model, version, expected_etag=etag)
            outcomes[version] = "won"
        except Conflict:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=promote, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(v for v, o in outcomes.items() if o == "won")
    assert champion(storage, model) == winner


def test_a_stage_that_keeps_failing_ends_in_poison_and_fails_the_run(storage):
    model = name("poison")
    spec_hash = upload(storage, example_spec("diabetes", model))
    run_id = runs.new_run_id()
    runs.record(storage, model, run_id, "received")
    storage.enqueue(paths.TRAIN_QUEUE, TrainRequest(run_id=run_id, model=model, data_hash="0" * 64,
                                                    spec_hash=spec_hash).to_payload())

    run = wait_for(lambda: (r := runs.get(storage, model, run_id))["status"] == "failed" and r,
                   "the run to be marked failed from the poison queue", timeout=90)

    retries = [e for e in run["timeline"] if e["status"] == "retrying"]
    assert len(retries) == 5  # maxDequeueCount in host.json
    assert "train-requests-poison" in run["error"] and "not found" in run["error"]
    assert registry.list_versions(storage, model) == []
