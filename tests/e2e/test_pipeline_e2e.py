"""The training pipeline end to end through the local host: a data drop becomes a champion."""
from __future__ import annotations

import uuid

import pytest

from examples.datasets import breast_cancer, diabetes
from shared import paths, registry, runs
from shared.clock import SYSTEM_CLOCK
from shared.lifecycle.records import AliasAction, RunStatus, VersionStatus
from shared.messages import TrainRequest
from tests.e2e.support import (
    assert_invariants,
    champion,
    drop,
    example_spec,
    in_parallel,
    upload,
    wait_for_run,
    wait_for_run_id,
)
from tests.fixtures.devhost_support import decode_json_message


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

    assert run.status == RunStatus.PROMOTED, run
    timeline = [e.status for e in run.timeline]
    assert timeline == ["received", "prepared", "trained", "exported", "promoted"], timeline
    assert run.error is None and run.attempts == []
    version = registry.get_version(storage, model, champion(storage, model))
    assert version.status == VersionStatus.PROMOTED and version.run_id == run.run_id and run.version == 1
    lineage = version.lineage
    assert lineage["source_blob"] == f"datasets/{model}/data.csv"
    assert lineage["spec_hash"] == spec_hash and len(lineage["data_hash"]) == 64
    assert version.key == f"{lineage['data_hash']}/{spec_hash}"
    assert lineage["seed"] == 42 and set(lineage["libraries"]) >= {"sklearn", "skl2onnx", "onnx", "onnxruntime"}
    assert version.metrics["onnx_holdout"]["roc_auc"] >= 0.95
    assert version.parity["passed"] and version.parity["max_abs_diff"] <= 1e-5
    assert version.latency["p99_ms"] > 0
    assert version.onnx["sha256"] == version.artifacts["onnx"].sha256
    assert [h.status for h in version.history] == ["trained", "exported", "promoted"]
    assert any("no champion" in r for r in version.decision["reasons"])
    onnx = storage.read(paths.MLOPS, version.onnx["path"]).data
    assert len(onnx) == version.onnx["size_bytes"]
    assert_invariants(storage, model)


def test_bad_data_gets_a_report_next_to_it_and_nothing_trains(storage):
    model = name("bad")
    upload(storage, example_spec("breast-cancer", model))
    frame = breast_cancer().drop(columns=["mean_radius"])
    frame.loc[:10, "mean_texture"] = -5.0
    original = drop(storage, model, "broken.csv", frame)
    before = storage.read(paths.DATASETS, original)

    run = wait_for_run(storage, model, "broken.csv")

    assert run.status == RunStatus.REJECTED
    assert run.error and run.error.startswith("data rejected:")
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
    first = wait_for_run(storage, model, "first.csv")
    assert first.status == RunStatus.PROMOTED

    drop(storage, model, "second.csv", diabetes())
    run = wait_for_run(storage, model, "second.csv")

    assert run.status == RunStatus.DUPLICATE
    assert "trained by run" in run.timeline[-1].detail and "as version 1" in run.timeline[-1].detail
    assert run.version == 1 and run.duplicate_of == first.run_id
    assert [v.version for v in registry.list_versions(storage, model)] == [1]
    assert_invariants(storage, model)


def test_a_worse_model_is_rejected_with_reasons_and_the_champion_stays(storage, api):
    model = name("worse")
    upload(storage, example_spec("diabetes", model, quality_bar={"rmse": {"max": 1000}}))
    drop(storage, model, "good.csv", diabetes())
    assert wait_for_run(storage, model, "good.csv").status == RunStatus.PROMOTED

    upload(storage, example_spec("diabetes", model, quality_bar={"rmse": {"max": 1000}},
                                 estimator={"type": "ridge", "params": {"alpha": 10000.0}}))
    response = api("POST", f"registry/models/{model}/retrain", key="master", json={"reason": "heavier regularisation"})
    assert response.status_code == 202, response.text
    run = wait_for_run_id(storage, model, response.json()["run_id"])

    assert run.status == RunStatus.REJECTED, run
    version = registry.get_version(storage, model, run.version)
    assert version.status == VersionStatus.REJECTED and version.run_id == run.run_id
    reasons = version.decision["reasons"]
    assert any(r.startswith("rejected: rmse") and "worse than champion" in r for r in reasons), reasons
    assert run.error and "worse than champion" in run.error
    assert champion(storage, model) == 1
    assert_invariants(storage, model)


def test_manual_approval_waits_then_promotes_and_reject_keeps_the_champion(storage, api):
    model = name("manual")
    upload(storage, example_spec("diabetes", model, approval="manual", comparison={"rmse": {"max_regression": 100.0}}))
    drop(storage, model, "a.csv", diabetes())
    run = wait_for_run(storage, model, "a.csv")
    assert run.status == RunStatus.PENDING_APPROVAL and champion(storage, model) is None

    assert api("POST", f"registry/models/{model}/versions/1/approve", key="function").status_code == 401
    approved = api("POST", f"registry/models/{model}/versions/1/approve", key="master", json={"by": "reviewer"})
    assert approved.status_code == 200, approved.text
    assert approved.json() | {"message": None} == {"champion": 1, "previous": None, "changed": True, "message": None}
    assert champion(storage, model) == 1
    assert registry.get_version(storage, model, 1).approval["by"] == "reviewer"
    assert runs.get(storage, model, run.run_id).status == RunStatus.PROMOTED
    again = api("POST", f"registry/models/{model}/versions/1/approve", key="master")
    assert again.status_code == 200 and again.json()["changed"] is False, again.text
    assert "already the champion" in again.json()["message"]

    drop(storage, model, "b.csv", diabetes().sample(frac=0.9, random_state=1))
    assert wait_for_run(storage, model, "b.csv").status == RunStatus.PENDING_APPROVAL
    rejected = api("POST", f"registry/models/{model}/versions/2/reject", key="master", json={"reason": "not now"})
    assert rejected.status_code == 200 and rejected.json()["changed"] is True, rejected.text
    assert registry.get_version(storage, model, 2).status == VersionStatus.REJECTED
    late = api("POST", f"registry/models/{model}/versions/2/approve", key="master")
    assert late.status_code == 409 and late.json()["error_code"] == "ILLEGAL_TRANSITION", late.text
    assert "not pending_approval" in late.json()["message"]
    assert champion(storage, model) == 1
    assert_invariants(storage, model)


def test_rollback_restores_the_previous_champion(storage, api):
    model = name("roll")
    upload(storage, example_spec("diabetes", model, comparison={"rmse": {"max_regression": 100.0}}))
    drop(storage, model, "a.csv", diabetes())
    assert wait_for_run(storage, model, "a.csv").status == RunStatus.PROMOTED
    nothing = api("POST", f"registry/models/{model}/rollback", key="master")
    assert nothing.status_code == 400 and "no previous champion" in nothing.json()["message"], nothing.text
    drop(storage, model, "b.csv", diabetes().sample(frac=0.95, random_state=3))
    second = wait_for_run(storage, model, "b.csv")
    assert second.status == RunStatus.PROMOTED
    assert champion(storage, model) == 2

    response = api("POST", f"registry/models/{model}/rollback", key="master", json={"from": 2})

    assert response.status_code == 200, response.text
    assert response.json() | {"message": None} == {"champion": 1, "previous": None, "changed": True, "message": None}
    assert champion(storage, model) == 1
    assert registry.get_version(storage, model, 2).status == VersionStatus.ROLLED_BACK
    assert runs.get(storage, model, second.run_id).status == RunStatus.ROLLED_BACK
    listed = api("GET", f"registry/models/{model}/versions").json()
    assert listed["aliases"]["champion"] == 1 and len(listed["versions"]) == 2
    history = api("GET", f"registry/models/{model}/aliases").json()["history"]
    assert [(h["action"], h.get("from_version"), h["to_version"]) for h in history] == [
        ("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    assert_invariants(storage, model)


def test_parallel_approvals_of_one_pending_version_flip_the_champion_once(storage, api):
    model = name("race")
    upload(storage, example_spec("diabetes", model, approval="manual", comparison={"rmse": {"max_regression": 100.0}}))
    drop(storage, model, "a.csv", diabetes())
    assert wait_for_run(storage, model, "a.csv").status == RunStatus.PENDING_APPROVAL
    assert api("POST", f"registry/models/{model}/versions/1/approve", key="master").status_code == 200
    drop(storage, model, "b.csv", diabetes().sample(frac=0.9, random_state=2))
    assert wait_for_run(storage, model, "b.csv").status == RunStatus.PENDING_APPROVAL

    answers = in_parallel([lambda i=i: api("POST", f"registry/models/{model}/versions/2/approve", key="master",
                                          json={"by": f"reviewer-{i}"}) for i in range(6)])

    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sum(b["changed"] for b in bodies) == 1, bodies
    [flip] = [b for b in bodies if b["changed"]]
    assert (flip["champion"], flip["previous"]) == (2, 1)
    assert all(b["champion"] == 2 for b in bodies), bodies
    aliases, _ = registry.get_aliases(storage, model)
    assert [(h.action, h.from_version, h.to_version) for h in aliases.history] == [
        (AliasAction.APPROVE, None, 1), (AliasAction.APPROVE, 1, 2)]
    assert_invariants(storage, model)


def test_a_stage_that_fails_deterministically_fails_the_run_at_once_with_the_real_error(storage):
    model = name("poison")
    spec_hash = upload(storage, example_spec("diabetes", model))
    run_id = runs.new_run_id()
    runs.record(storage, SYSTEM_CLOCK, model, run_id, RunStatus.RECEIVED)
    storage.enqueue(paths.TRAIN_QUEUE, TrainRequest(run_id=run_id, model=model, data_hash="0" * 64,
                                                    spec_hash=spec_hash).to_payload())

    run = wait_for_run_id(storage, model, run_id, timeout=90)

    assert run.status == RunStatus.FAILED, run
    assert run.error.startswith("train failed: NotFound: "), run.error
    assert paths.prepared_data(model, "0" * 64) in run.error and "not found" in run.error
    [attempt] = run.attempts  # a missing blob fails the same way every time: no retries
    assert (attempt.stage, attempt.error_type, attempt.transient) == ("train", "NotFound", False)
    assert registry.list_versions(storage, model) == []
    poisoned = [decode_json_message(m) for m in storage.peek(paths.poison(paths.TRAIN_QUEUE))]
    assert not [m for m in poisoned if m.get("run_id") == run_id]
