"""The pipeline's lifecycle on the storage fake: redelivery, races, crashes, outages, rollbacks."""
from __future__ import annotations

import base64
import re
import threading

import pandas as pd
import pytest

from examples.datasets import diabetes
from shared import paths, registry, runs
from shared.errors import Conflict, IllegalTransition, StorageUnreachable
from shared.lifecycle import releases
from shared.lifecycle.claims import ClaimState
from shared.lifecycle.records import AliasAction, RunStatus, VersionStatus
from shared.lifecycle.sweeper import sweep
from shared.messages import StageRequest, TrainRequest
from tests.e2e.support import example_spec
from tests.harness import Crash, LocalPipeline
from tests.lifecycle_invariants import check_invariants

V = VersionStatus
MODEL = "dia"
LENIENT = {"comparison": {"rmse": {"max_regression": 1000}}}  # every later candidate beats the champion


@pytest.fixture
def pipe() -> LocalPipeline:
    p = LocalPipeline()
    p.upload(example_spec("diabetes", MODEL, **LENIENT))
    return p


def promoted_twice(pipe: LocalPipeline) -> None:
    """Two champions in a row: version 1, then version 2 trained on other rows."""
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    pipe.drop(MODEL, "b.csv", diabetes().iloc[::-1].reset_index(drop=True).head(430))
    pipe.run_until_idle()
    aliases = registry.get_aliases(pipe.storage, MODEL)[0]
    assert (aliases.champion, aliases.previous) == (2, 1)


def copies_of_every_stage_message(pipe: LocalPipeline, version: int) -> list[tuple[str, dict]]:
    record = registry.get_version(pipe.storage, MODEL, version)
    lineage = record.lineage or {}
    train = TrainRequest(run_id=record.run_id or "", model=MODEL, data_hash=lineage["data_hash"],
                         spec_hash=lineage["spec_hash"], source_blob=lineage["source_blob"])
    stage = StageRequest(run_id=record.run_id or "", model=MODEL, version=version)
    return [(paths.TRAIN_QUEUE, train.to_payload()), (paths.EXPORT_QUEUE, stage.to_payload()),
            (paths.VALIDATE_QUEUE, stage.to_payload())]


def test_an_extra_delivery_of_each_stage_message_changes_nothing(pipe):
    promoted_twice(pipe)
    before = registry.get_aliases(pipe.storage, MODEL)[0]
    for queue, payload in copies_of_every_stage_message(pipe, 2) + copies_of_every_stage_message(pipe, 1):
        pipe.storage.enqueue(queue, payload)
    pipe.run_until_idle()
    after = registry.get_aliases(pipe.storage, MODEL)[0]
    assert (after.champion, after.previous, len(after.history)) == (2, 1, len(before.history))
    assert [v.status for v in registry.list_versions(pipe.storage, MODEL)] == [V.SUPERSEDED, V.PROMOTED]
    check_invariants(pipe)


def test_a_redelivered_validate_message_that_already_promoted_does_not_decide_against_itself(pipe):
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    _, _, validate = copies_of_every_stage_message(pipe, 1)
    # the claim is completed: even a message for a version that IS the champion is a no-op
    pipe.storage.enqueue(*validate)
    pipe.run_until_idle()
    aliases = registry.get_aliases(pipe.storage, MODEL)[0]
    assert (aliases.champion, aliases.previous) == (1, None)


def manual_second_version(pipe: LocalPipeline) -> None:
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    pipe.upload(example_spec("diabetes", MODEL, approval="manual", **LENIENT))
    pipe.drop(MODEL, "b.csv", diabetes().head(430))
    pipe.run_until_idle()
    assert registry.get_version(pipe.storage, MODEL, 2).status == V.PENDING_APPROVAL


def test_four_parallel_approvals_flip_once_and_keep_the_replaced_champion_as_previous(pipe):
    manual_second_version(pipe)
    results: list = []

    def approve() -> None:
        results.append(releases.approve(pipe.ctx.fresh(), MODEL, 2, by="reviewer"))

    threads = [threading.Thread(target=approve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    aliases = registry.get_aliases(pipe.storage, MODEL)[0]
    assert (aliases.champion, aliases.previous) == (2, 1)
    assert sorted(r.changed for r in results) == [False, False, False, True]
    assert [c.action for c in aliases.history] == [AliasAction.PROMOTE, AliasAction.APPROVE]
    check_invariants(pipe)


def test_a_version_being_approved_cannot_be_rejected_and_a_rejected_one_cannot_be_approved(pipe):
    manual_second_version(pipe)
    assert releases.reject(pipe.ctx.fresh(), MODEL, 2, by="r", reason="no")["changed"] is True
    assert releases.reject(pipe.ctx.fresh(), MODEL, 2, by="r", reason="no")["changed"] is False
    with pytest.raises(IllegalTransition, match="is rejected, not pending_approval"):
        releases.approve(pipe.ctx.fresh(), MODEL, 2, by="r")
    assert runs.get(pipe.storage, MODEL, registry.get_version(pipe.storage, MODEL, 2).run_id or "").status == "rejected"


def test_rollback_with_from_is_safe_to_retry_and_goes_back_step_by_step(pipe):
    promoted_twice(pipe)
    pipe.drop(MODEL, "c.csv", diabetes().head(425))
    pipe.run_until_idle()
    assert registry.get_aliases(pipe.storage, MODEL)[0].champion == 3
    first = releases.rollback(pipe.ctx.fresh(), MODEL, {"from": 3}, by="ops")
    again = releases.rollback(pipe.ctx.fresh(), MODEL, {"from": 3}, by="ops")
    assert first.changed and (first.aliases.champion, first.aliases.previous) == (2, 1)
    assert not again.changed and again.aliases.champion == 2
    further = releases.rollback(pipe.ctx.fresh(), MODEL, {"from": 2}, by="ops")
    assert (further.aliases.champion, further.aliases.previous) == (1, None)
    with pytest.raises(Conflict) as err:
        releases.rollback(pipe.ctx.fresh(), MODEL, {"from": 3, "to": 2}, by="ops")
    assert err.value.details["champion"] == 1
    statuses = [v.status for v in registry.list_versions(pipe.storage, MODEL)]
    assert statuses == [V.PROMOTED, V.ROLLED_BACK, V.ROLLED_BACK]
    check_invariants(pipe)


def test_rolling_back_to_a_version_whose_artifact_was_tampered_with_is_refused(pipe):
    promoted_twice(pipe)
    onnx = registry.get_version(pipe.storage, MODEL, 1).artifacts["onnx"]
    pipe.storage.write(paths.MLOPS, onnx.path, b"not the model")
    with pytest.raises(Conflict, match="sha256"):
        releases.rollback(pipe.ctx.fresh(), MODEL, {}, by="ops")
    assert registry.get_aliases(pipe.storage, MODEL)[0].champion == 2


def test_a_duplicate_that_finds_the_work_in_progress_waits_and_ends_duplicate(pipe):
    pipe.drop(MODEL, "a.csv", diabetes())
    original = pipe.receive(paths.TRAIN_QUEUE)
    assert original is not None
    body = base64.b64decode(original.content)
    # the original worker holds the claim (its lease is live) when an identical drop arrives
    held = pipe.ctx.claims.acquire("train", pipe_key(body), owner="original-worker",
                                   run_id=TrainRequest.model_validate_json(body).run_id, model=MODEL,
                                   queue=paths.TRAIN_QUEUE, payload=TrainRequest.model_validate_json(body).to_payload())
    pipe.drop(MODEL, "copy.csv", diabetes())
    assert pipe.deliver_one(paths.TRAIN_QUEUE)  # the duplicate: deferred, not failed
    deferred = [r for q, r in pipe.log if isinstance(r, dict) and r.get("outcome") == "deferred"]
    assert deferred and deferred[0]["deferrals"] == 1
    pipe.ctx.claims.release(held, "handing back for the test")  # type: ignore[arg-type]
    pipe.storage.release(paths.TRAIN_QUEUE, original, visibility_timeout=0)
    pipe.run_until_idle()
    by_source = {r.source_blob: r for r in runs.list_runs(pipe.storage, MODEL)}  # type: ignore[attr-defined]
    assert by_source[f"datasets/{MODEL}/a.csv"].status == RunStatus.PROMOTED
    assert by_source[f"datasets/{MODEL}/copy.csv"].status == RunStatus.DUPLICATE
    assert len(registry.list_versions(pipe.storage, MODEL)) == 1
    assert not pipe.storage.queue_texts(paths.poison(paths.TRAIN_QUEUE))
    check_invariants(pipe)


def pipe_key(body: bytes) -> str:
    request = TrainRequest.model_validate_json(body)
    return f"{request.model}-{request.data_hash[:20]}-{request.spec_hash[:20]}"


def train_killed_at_write(pipe: LocalPipeline, n: int) -> None:
    """Deliver the train message to a worker that dies before its n-th write."""
    writes = {"n": 0}

    def kill(op: str, where: str, what: str) -> None:
        if op in ("write", "enqueue", "delete"):
            writes["n"] += 1
            if writes["n"] == n:
                raise Crash(f"killed at write {n}: {op} {what}")

    pipe.storage.fault = kill
    with pytest.raises(Crash):
        pipe.deliver_one(paths.TRAIN_QUEUE)
    pipe.storage.fault = None


@pytest.mark.parametrize("crash_at_write", [3, 4, 5, 6, 7, 8, 9, 10])
def test_a_worker_killed_at_any_write_of_train_is_finished_by_lease_expiry_with_one_version(pipe, crash_at_write):
    """Writes 1-2 are the claim itself; from the 3rd on, a claim exists and its lease drives recovery."""
    pipe.drop(MODEL, "a.csv", diabetes())
    train_killed_at_write(pipe, crash_at_write)
    started = pipe.clock.now()
    pipe.run_until_idle(tick=10, until=lambda: registry.get_aliases(pipe.storage, MODEL)[0].champion is not None)
    recovered = (pipe.clock.now() - started).total_seconds()
    pipe.run_until_idle()  # and the original message, visible again after the host's 10-minute lease
    assert registry.get_aliases(pipe.storage, MODEL)[0].champion == 1
    assert len(registry.list_versions(pipe.storage, MODEL)) == 1
    assert recovered <= 180, f"recovered after {recovered}s, not by the lease and the sweeper"
    check_invariants(pipe)


@pytest.mark.parametrize("crash_at_write", [1, 2])
def test_a_worker_killed_before_it_holds_the_claim_is_redelivered_by_the_host(pipe, crash_at_write):
    pipe.drop(MODEL, "a.csv", diabetes())
    train_killed_at_write(pipe, crash_at_write)
    pipe.run_until_idle()
    assert registry.get_aliases(pipe.storage, MODEL)[0].champion == 1
    assert len(registry.list_versions(pipe.storage, MODEL)) == 1
    check_invariants(pipe)


def test_a_storage_outage_during_a_stage_ends_in_a_completed_run_after_storage_returns(pipe):
    pipe.drop(MODEL, "a.csv", diabetes())
    assert pipe.deliver_one(paths.TRAIN_QUEUE)
    calls = {"n": 0}

    def outage_midway(op: str, where: str, what: str) -> None:
        calls["n"] += 1
        if calls["n"] > 6:
            raise StorageUnreachable("storage (endpoint=memory://) is unreachable")

    message = pipe.receive(paths.EXPORT_QUEUE)
    pipe.storage.fault = outage_midway
    with pytest.raises(StorageUnreachable):  # the host's own message update fails too: stays invisible
        pipe.deliver_one(paths.EXPORT_QUEUE, message)
    pipe.storage.fault = None
    claim = pipe.ctx.claims.get("export", f"{MODEL}-000001")
    assert claim is not None and claim.state == ClaimState.IN_PROGRESS  # the release could not be written
    back = pipe.clock.now()
    pipe.run_until_idle(tick=10, until=lambda: registry.get_version(pipe.storage, MODEL, 1).status == V.PROMOTED)
    assert (pipe.clock.now() - back).total_seconds() <= 90  # lease (60 s) + one sweep
    pipe.run_until_idle()
    check_invariants(pipe)


def test_data_that_cannot_be_trained_is_rejected_at_once_with_a_report_and_leaves_the_data_pointer(pipe):
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    pointer = pipe.storage.read_json(paths.MLOPS, paths.current_data(MODEL))[0]
    bad = diabetes()
    bad.loc[:, "bmi"] = 1e308  # passes the range check (no max), overflows the scaler
    pipe.upload(example_spec("diabetes", MODEL, **LENIENT, features=[
        {"name": c, "kind": "numeric"} for c in ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]]))
    result = pipe.drop(MODEL, "bad.csv", bad)
    assert result["outcome"] == "prepared"
    pipe.run_until_idle()
    run = runs.get(pipe.storage, MODEL, result["run_id"])
    assert run.status == RunStatus.REJECTED and "bmi" in (run.error or "")
    assert [a.attempt for a in run.attempts] == []  # rejected on the first try, never retried
    report, _ = pipe.storage.read_json(paths.REJECTED, paths.rejection_report(f"{MODEL}/bad.csv"))
    assert report["stage"] == "train" and any(p["column"] == "bmi" for p in report["problems"])
    assert pipe.storage.read_json(paths.MLOPS, paths.current_data(MODEL))[0] == pointer
    check_invariants(pipe)


def test_a_bug_fails_the_run_at_once_with_its_type_and_message(pipe):
    class Broken(type(pipe.ctx.learner())):  # type: ignore[misc]
        def fit(self, frame, spec, extra):  # type: ignore[no-untyped-def]
            raise KeyError("feature_x")

    from dataclasses import replace
    pipe.ctx = replace(pipe.ctx, ml=Broken())
    result = pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    run = runs.get(pipe.storage, MODEL, result["run_id"])
    assert run.status == RunStatus.FAILED and "KeyError" in (run.error or "") and "feature_x" in (run.error or "")
    assert run.attempts[-1].error_type == "KeyError" and not run.attempts[-1].transient


def test_the_poison_handler_does_not_fail_a_run_whose_work_completed(pipe):
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    _, _, validate = copies_of_every_stage_message(pipe, 1)
    pipe.storage.enqueue(paths.poison(paths.VALIDATE_QUEUE), validate[1])
    pipe.run_until_idle()
    assert registry.get_version(pipe.storage, MODEL, 1).status == V.PROMOTED
    run = runs.get(pipe.storage, MODEL, registry.get_version(pipe.storage, MODEL, 1).run_id or "")
    assert run.status == RunStatus.PROMOTED and run.error is None


def test_repeated_transient_failures_end_failed_with_the_real_last_error(pipe):
    result = pipe.drop(MODEL, "a.csv", diabetes())

    def flaky(op: str, where: str, what: str) -> None:
        if op == "read" and "prepared/" in what:
            raise TimeoutError("read of prepared data timed out")

    pipe.storage.fault = flaky
    pipe.run_until_idle()
    pipe.storage.fault = None
    run = runs.get(pipe.storage, MODEL, result["run_id"])
    assert run.status == RunStatus.FAILED
    assert "TimeoutError: read of prepared data timed out" in (run.error or "")
    assert len(run.attempts) == 5
    assert sweep(pipe.ctx.fresh()).resent == []  # given up: nothing left for the sweeper


def test_an_approval_cut_short_after_the_alias_flip_is_finished_by_the_sweeper(pipe):
    manual_second_version(pipe)
    aliases_path = paths.aliases(MODEL)

    def die_after_flip(op: str, where: str, what: str) -> None:
        if op == "write" and what != aliases_path and registry.get_aliases(pipe.storage, MODEL)[0].champion == 2:
            raise Crash("killed right after the flip")

    pipe.storage.fault = die_after_flip
    with pytest.raises(Crash):
        releases.approve(pipe.ctx.fresh(), MODEL, 2, by="reviewer")
    pipe.storage.fault = None
    aliases = registry.get_aliases(pipe.storage, MODEL)[0]
    assert (aliases.champion, aliases.previous, aliases.synced) == (2, 1, False)
    assert registry.get_version(pipe.storage, MODEL, 1).status == V.PROMOTED  # not yet superseded
    assert sweep(pipe.ctx.fresh()).synced == [MODEL]
    assert [v.status for v in registry.list_versions(pipe.storage, MODEL)] == [V.SUPERSEDED, V.PROMOTED]
    check_invariants(pipe)


def test_a_validation_that_flipped_then_died_never_decides_against_itself(pipe):
    # a spec that demands improvement over the champion: compared with itself, v1 would be rejected
    pipe.upload(example_spec("diabetes", MODEL, comparison={"rmse": {"min_improvement": 5}}))
    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.deliver_one(paths.TRAIN_QUEUE)
    pipe.deliver_one(paths.EXPORT_QUEUE)
    aliases_path = paths.aliases(MODEL)
    flipped = {"done": False}

    def die_after_flip(op: str, where: str, what: str) -> None:
        if op == "write" and what == aliases_path:
            flipped["done"] = True
        elif op == "write" and flipped["done"]:
            raise Crash("killed right after the flip")

    pipe.storage.fault = die_after_flip
    with pytest.raises(Crash):
        pipe.deliver_one(paths.VALIDATE_QUEUE)
    pipe.storage.fault = None
    assert registry.get_version(pipe.storage, MODEL, 1).status == V.EXPORTED
    pipe.clock.advance(61)  # the dead worker's lease expires; a redelivery arrives before any sweep
    _, _, validate = copies_of_every_stage_message(pipe, 1)
    pipe.storage.enqueue(*validate)
    assert pipe.deliver_one(paths.VALIDATE_QUEUE)
    assert registry.get_version(pipe.storage, MODEL, 1).status == V.PROMOTED
    pipe.run_until_idle()
    assert registry.get_aliases(pipe.storage, MODEL)[0].champion == 1
    check_invariants(pipe)


def test_a_retrain_that_keeps_failing_ends_failed_with_its_last_error(pipe):
    from shared.lifecycle.records import RunStatus as R
    from shared.messages import RetrainRequest

    pipe.drop(MODEL, "a.csv", diabetes())
    pipe.run_until_idle()
    runs.record(pipe.storage, pipe.clock, MODEL, "retrain-1", R.RECEIVED, detail="test")
    pipe.storage.enqueue(paths.RETRAIN_QUEUE, RetrainRequest(model=MODEL, run_id="retrain-1").to_payload())

    def flaky(op: str, where: str, what: str) -> None:
        if op == "read" and what == paths.current_data(MODEL):
            raise TimeoutError("current-data pointer read timed out")

    pipe.storage.fault = flaky
    pipe.run_until_idle()
    pipe.storage.fault = None
    run = runs.get(pipe.storage, MODEL, "retrain-1")
    assert run.status == R.FAILED and "TimeoutError: current-data pointer read timed out" in (run.error or "")
    assert len(run.attempts) == 5


def test_the_champion_is_compared_only_on_holdout_rows_it_did_not_train_on(pipe: LocalPipeline) -> None:
    """A retrain on the same data plus new rows re-splits: the champion must not be scored on its own training rows."""
    base = diabetes()
    pipe.drop(MODEL, "a.csv", base)
    pipe.run_until_idle()
    fresh = base.sample(200, random_state=5).reset_index(drop=True)
    fresh["bmi"] = fresh["bmi"] + 0.05  # new rows (different content), same distribution family
    pipe.drop(MODEL, "b.csv", pd.concat([base, fresh], ignore_index=True))
    pipe.run_until_idle()

    decision = registry.get_version(pipe.storage, MODEL, 2).decision or {}
    note = next(r for r in decision["reasons"] if r.startswith("note: champion compared on the"))
    common, rows = (int(n) for n in re.findall(r"the (\d+) of (\d+) holdout rows", note)[0])
    assert 30 <= common < rows  # the champion trained on the rest
    assert decision["challenger_compared_metrics"] is not None
    assert decision["champion_metrics"] != registry.get_version(pipe.storage, MODEL, 1).metrics["onnx_holdout"]


def test_rows_not_trained_on_tells_training_rows_from_holdout_and_new_rows() -> None:
    from shared.training import rows_not_trained_on

    data = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
    holdout = data.iloc[[3]]
    frame = pd.DataFrame({"x": [1, 4.0, 9.0], "y": ["a", "b", "a"]})  # trained on, held out, new (1 as int)
    assert rows_not_trained_on(frame, data, holdout, ["x", "y"]).tolist() == [False, True, True]
