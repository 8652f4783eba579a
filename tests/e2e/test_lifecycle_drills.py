"""Lifecycle drills through the local host on Azurite: redelivery, races, a changed feature set, a crash.

Each drill ends by checking the lifecycle invariants (support.assert_invariants) and prints its
figures (versions, aliases, timings) for `pytest -s`.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from devhost.azurite import ROOT, Azurite, start_azurite
from examples.datasets import diabetes, predictive_maintenance
from shared import paths, registry, runs
from shared.clock import SYSTEM_CLOCK
from shared.learner import Learner
from shared.lifecycle.claims import ClaimRecord, ClaimState
from shared.lifecycle.records import AliasAction, RunStatus, VersionStatus
from shared.messages import StageRequest, TrainRequest
from shared.settings import Settings
from shared.storage import AzureStorage
from tests.e2e.conftest import SAMPLE_SETTINGS
from tests.e2e.support import (
    Snapshot,
    assert_invariants,
    claims_of,
    drop,
    example_spec,
    in_parallel,
    upload,
    wait_for_run,
    wait_until_idle,
)
from tests.fixtures.devhost_support import HostProcess, decode_json_message, wait_for

R = RunStatus
V = VersionStatus
LENIENT = {"rmse": {"max_regression": 100.0}}  # any sane candidate beats the champion: promotions are predictable
RECOVERY_BUDGET_SECONDS = 180.0
MID_FIT_SECONDS = 3.0


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def figures(drill: str, **values: Any) -> None:
    """Print one drill's figures on one line (shown with pytest -s)."""
    print(f"\n[drill {drill}] " + " ".join(f"{k}={v}" for k, v in values.items()))


def slow_spec(model: str) -> dict[str, Any]:
    """Predictive maintenance with 300 deep boosted trees (the spec's cap): a fit of several seconds to crash
    or race into (6.6 s on a 2-core VM, as long as the 1000 shallow trees it used before)."""
    return example_spec("predictive-maintenance", model, quality_bar={"roc_auc": {"min": 0.75}},
                        estimator={"type": "gradient_boosting",
                                   "params": {"n_estimators": 300, "max_depth": 8, "learning_rate": 0.05}})


def slow_data() -> pd.DataFrame:
    return predictive_maintenance(n_rows=10000)


def promoted_twice(storage: AzureStorage, model: str) -> Snapshot:
    """A diabetes model with two promoted versions: champion 2, previous 1."""
    upload(storage, example_spec("diabetes", model, comparison=LENIENT))
    drop(storage, model, "a.csv", diabetes())
    assert wait_for_run(storage, model, "a.csv").status == R.PROMOTED
    drop(storage, model, "b.csv", diabetes().sample(frac=0.95, random_state=3))
    assert wait_for_run(storage, model, "b.csv").status == R.PROMOTED
    snap = assert_invariants(storage, model)
    assert (snap.aliases.champion, snap.aliases.previous) == (2, 1)
    return snap


# ---------------------------------------------------------------------------------------------
# a. redelivery


def test_one_extra_delivery_of_every_stage_message_changes_nothing(app_host, storage, azurite):
    model = name("redeliver")
    before = promoted_twice(storage, model)
    sent = 0
    for version in before.versions:
        run = runs.get(storage, model, version.run_id)
        lineage = version.lineage or {}
        train = TrainRequest(run_id=run.run_id, model=model, data_hash=lineage["data_hash"],
                             spec_hash=lineage["spec_hash"], source_blob=lineage["source_blob"],
                             received_at=run.created)
        stage = StageRequest(run_id=run.run_id, model=model, version=version.version)
        for queue, message in ((paths.TRAIN_QUEUE, train), (paths.EXPORT_QUEUE, stage), (paths.VALIDATE_QUEUE, stage)):
            storage.enqueue(queue, message.to_payload())
            sent += 1

    sent_at = time.monotonic()
    wait_until_idle(storage, azurite.connection_string, model)
    drained = time.monotonic() - sent_at

    after = assert_invariants(storage, model)
    assert [v.to_json() for v in after.versions] == [v.to_json() for v in before.versions]
    assert after.aliases.to_json() == before.aliases.to_json()
    assert after.to_json()["runs"] == before.to_json()["runs"]
    assert len(after.aliases.history) == 2
    figures("a", redelivered=sent, drained_s=round(drained, 1), versions_created=len(after.versions),
            after=after.describe())


# ---------------------------------------------------------------------------------------------
# b. parallel approvals


def test_four_parallel_approvals_of_one_pending_version_flip_the_champion_once(storage, api):
    model = name("approve4")
    upload(storage, example_spec("diabetes", model, approval="manual", comparison=LENIENT))
    drop(storage, model, "a.csv", diabetes())
    assert wait_for_run(storage, model, "a.csv").status == R.PENDING_APPROVAL
    first = api("POST", f"registry/models/{model}/versions/1/approve", key="master", json={"by": "lead"})
    assert first.status_code == 200 and first.json()["changed"], first.text
    drop(storage, model, "b.csv", diabetes().sample(frac=0.9, random_state=2))
    pending = wait_for_run(storage, model, "b.csv")
    assert pending.status == R.PENDING_APPROVAL and pending.version == 2

    answers = in_parallel([lambda i=i: api("POST", f"registry/models/{model}/versions/2/approve", key="master",
                                          json={"by": f"reviewer-{i}"}) for i in range(4)])

    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    flips = [b for b in bodies if b["changed"]]
    assert len(flips) == 1, bodies
    assert (flips[0]["champion"], flips[0]["previous"]) == (2, 1)
    assert all(b["champion"] == 2 and b["champion"] != b["previous"] for b in bodies), bodies
    snap = assert_invariants(storage, model)
    assert [(h.action, h.from_version, h.to_version) for h in snap.aliases.history] == [
        (AliasAction.APPROVE, None, 1), (AliasAction.APPROVE, 1, 2)]
    assert runs.get(storage, model, pending.run_id).status == R.PROMOTED
    figures("b", approvals=len(answers), changed=[b["changed"] for b in bodies], versions_created=len(snap.versions),
            after=snap.describe())


# ---------------------------------------------------------------------------------------------
# c. parallel rollbacks


def test_two_parallel_rollbacks_flip_once_and_a_retry_is_harmless(storage, api):
    model = name("rollback2")
    before = promoted_twice(storage, model)
    body = {"from": before.aliases.champion}
    url = f"registry/models/{model}/rollback"

    answers = in_parallel([lambda: api("POST", url, key="master", json=body) for _ in range(2)])

    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["changed"] for a in answers) == [False, True], [a.json() for a in answers]
    assert {(a.json()["champion"], a.json()["previous"]) for a in answers} == {(1, None)}
    rolled = assert_invariants(storage, model)
    assert [(h.action, h.from_version, h.to_version) for h in rolled.aliases.history] == [
        (AliasAction.PROMOTE, None, 1), (AliasAction.PROMOTE, 1, 2), (AliasAction.ROLLBACK, 2, 1)]
    assert [v.status for v in rolled.versions] == [V.PROMOTED, V.ROLLED_BACK]

    retries = [api("POST", url, key="master", json=again) for again in (body, {**body, "to": 1})]

    assert [(r.status_code, r.json()["changed"]) for r in retries] == [(200, False), (200, False)], retries
    after = assert_invariants(storage, model)
    assert after.aliases.to_json() == rolled.aliases.to_json()
    assert [v.to_json() for v in after.versions] == [v.to_json() for v in rolled.versions]
    figures("c", rollbacks=[(a.status_code, a.json()["changed"]) for a in answers],
            retries=[(r.status_code, r.json()["changed"]) for r in retries],
            versions_created=len(after.versions), after=after.describe())


# ---------------------------------------------------------------------------------------------
# d. a spec that changes the feature set


def test_a_dropped_feature_is_compared_on_the_same_rows_and_a_missing_column_waits_for_a_reviewer(app_host, storage,
                                                                                                 api):
    model = name("features")
    full = example_spec("diabetes", model, comparison=LENIENT, quality_bar={"rmse": {"max": 80}, "r2": {"min": 0.2}})
    upload(storage, full)
    drop(storage, model, "all.csv", diabetes())
    assert wait_for_run(storage, model, "all.csv").status == R.PROMOTED
    without_s6 = {**full, "features": [f for f in full["features"] if f["name"] != "s6"]}
    upload(storage, without_s6)
    drop(storage, model, "still-has-s6.csv", diabetes().sample(frac=0.95, random_state=5))

    compared = wait_for_run(storage, model, "still-has-s6.csv")

    challenger = registry.get_version(storage, model, compared.version)
    decision = challenger.decision
    assert decision["champion_version"] == 1 and decision["champion_problem"] is None, decision
    assert decision["champion_metrics"] and "rmse" in decision["champion_metrics"], decision
    # The champion's figures are its own model scored on the challenger's holdout rows (s6 included).
    ml, first = Learner(), registry.get_version(storage, model, 1)
    holdout = ml.read_frame(registry.read_artifact(storage, challenger, "holdout"))
    assert len(holdout) == challenger.lineage["holdout_rows"] and "s6" in holdout.columns
    champion_spec = registry.spec_at(storage, model, first.lineage["spec_hash"])
    frame, missing = ml.frame_for_spec(holdout, champion_spec)
    assert missing == []
    data = ml.read_frame(storage.read("mlops", f"prepared/{model}/{first.lineage['data_hash']}/data.parquet").data)
    unseen = ml.rows_not_trained_on(frame, data, ml.read_frame(registry.read_artifact(storage, first, "holdout")),
                                    [*champion_spec.feature_names, champion_spec.target])
    if any(r.startswith("note: champion compared on the") for r in decision["reasons"]):
        frame = frame[unseen.to_numpy()]  # only the rows the champion did not train on
    rescored = ml.evaluate(registry.read_artifact(storage, first, "onnx"), frame, champion_spec, first.classes)
    assert rescored["rmse"] == pytest.approx(decision["champion_metrics"]["rmse"], rel=1e-6)
    # dropping an input breaks clients that still send it: held for a reviewer even with approval: auto
    assert compared.status == R.PENDING_APPROVAL, decision["reasons"]
    assert "breaking: input s6 removed" in decision["reasons"], decision["reasons"]
    approved = api("POST", f"registry/models/{model}/versions/{compared.version}/approve", key="master", json={})
    assert approved.status_code == 200, approved.text
    champion_now = registry.get_version(storage, model, registry.resolve_alias(storage, model)[0])
    assert "s5" in [f.name for f in registry.spec_at(storage, model, champion_now.lineage["spec_hash"]).features]

    without_s5 = {**without_s6, "features": [f for f in without_s6["features"] if f["name"] != "s5"]}
    upload(storage, without_s5)
    drop(storage, model, "no-s5.csv", diabetes().sample(frac=0.9, random_state=6).drop(columns=["s5"]))

    waiting = wait_for_run(storage, model, "no-s5.csv")

    held = registry.get_version(storage, model, waiting.version)
    assert waiting.status == R.PENDING_APPROVAL and held.status == V.PENDING_APPROVAL, held.decision
    assert held.decision["outcome"] == "pending_approval" and held.decision["champion_metrics"] is None
    assert "s5" in held.decision["champion_problem"]
    assert any("s5" in r and "absent from the new data" in r for r in held.decision["reasons"]), held.decision
    snap = assert_invariants(storage, model)
    figures("d", champion_metrics=decision["champion_metrics"]["rmse"],
            champion_own_holdout=first.metrics["onnx_holdout"]["rmse"],
            challenger=challenger.metrics["onnx_holdout"]["rmse"],
            missing_column_reason=held.decision["champion_problem"],
            versions_created=len(snap.versions), after=snap.describe())


# ---------------------------------------------------------------------------------------------
# e. a duplicate during a long fit


def test_the_same_data_dropped_twice_during_a_long_fit_ends_duplicate(app_host, storage):
    model = name("longfit")
    upload(storage, slow_spec(model))
    data = slow_data()
    drop(storage, model, "first.csv", data)
    drop(storage, model, "second.csv", data)

    ended = [wait_for_run(storage, model, f, timeout=240) for f in ("first.csv", "second.csv")]

    assert sorted(r.status for r in ended) == [R.DUPLICATE, R.PROMOTED], [(r.run_id, r.status) for r in ended]
    [winner] = [r for r in ended if r.status == R.PROMOTED]
    [duplicate] = [r for r in ended if r.status == R.DUPLICATE]
    assert duplicate.duplicate_of == winner.run_id and duplicate.version == winner.version == 1
    assert duplicate.error is None and duplicate.attempts == []  # waited, never failed
    poisoned = [decode_json_message(m) for m in storage.peek(paths.poison(paths.TRAIN_QUEUE))]
    assert not [m for m in poisoned if m.get("model") == model]
    [claim] = claims_of(storage, model, "train")
    assert claim.state == ClaimState.COMPLETED and claim.run_id == winner.run_id
    prepared = next(e.at for e in duplicate.timeline if e.status == R.PREPARED)
    assert claim.completed is not None and claim.started is not None
    assert prepared < claim.completed, "the duplicate's training request arrived after the fit had ended"
    snap = assert_invariants(storage, model)
    assert len(snap.versions) == 1
    figures("e", fit_seconds=round(snap.versions[0].fit_seconds, 1),
            duplicate_queued_vs_claim_start_s=round((prepared - claim.started).total_seconds(), 1),
            duplicate_waited_s=round((duplicate.timeline[-1].at - prepared).total_seconds(), 1),
            duplicate_settled_after_fit_s=round((duplicate.timeline[-1].at - claim.completed).total_seconds(), 1),
            versions_created=len(snap.versions), after=snap.describe())


# ---------------------------------------------------------------------------------------------
# f. kill -9 during train


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite for the crash drill alone, so no other host competes for its queues."""
    instance = start_azurite(tmp_path / "azurite", log_path=tmp_path / "azurite.log")
    yield instance
    instance.stop()


@pytest.fixture
def host_processes() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for process in started:
        process.kill()


def start_host(started: list[HostProcess], azurite: Azurite, host_id: str) -> HostProcess:
    env = {"AzureWebJobsStorage": azurite.connection_string, "AzureFunctionsWebHost__hostid": host_id}
    process = HostProcess(["--app-dir", str(ROOT), "--port", "0", "--settings", str(SAMPLE_SETTINGS),
                           "--blob-scan-interval", "0.2", "--grace", "1"], env)
    started.append(process)
    process.wait_output("Host started", timeout=90)
    return process


def train_claim_in_progress(storage: AzureStorage, model: str) -> ClaimRecord | None:
    return next((c for c in claims_of(storage, model, "train") if c.state == ClaimState.IN_PROGRESS), None)


def test_a_host_killed_during_train_recovers_after_a_restart_with_one_version(own_azurite, host_processes):
    storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": own_azurite.connection_string}))
    model, host_id = name("crash"), name("kill")
    first = start_host(host_processes, own_azurite, host_id)
    upload(storage, slow_spec(model))
    drop(storage, model, "data.csv", slow_data())
    claim = wait_for(lambda: train_claim_in_progress(storage, model), "the train claim to be in progress", 120)
    first.wait_output("Executed 'Functions.prepare' (Succeeded", timeout=30)
    # Choose the moment: a few seconds into the ~10 s fit, past reading its inputs.
    wait_for(lambda: (SYSTEM_CLOCK.now() - claim.started).total_seconds() >= MID_FIT_SECONDS,
             f"the claim to be {MID_FIT_SECONDS}s old", timeout=30)

    first.kill()  # SIGKILL: no release, no grace; the message stays hidden for the host's 10-minute lease
    killed_at, killed_wall = time.monotonic(), SYSTEM_CLOCK.now()
    assert "Executed 'Functions.train'" not in first.output
    assert registry.list_versions(storage, model) == []  # killed mid-fit: no version allocated yet
    orphan = train_claim_in_progress(storage, model)
    assert orphan is not None and orphan.owner == claim.owner, "the train claim settled before the kill"
    [run] = runs.list_runs(storage, model)
    assert run.status == R.PREPARED

    restarted = time.monotonic()
    second = start_host(host_processes, own_azurite, host_id)
    done = wait_for(lambda: (r := runs.get(storage, model, run.run_id)).status in {R.PROMOTED, R.FAILED, R.REJECTED}
                    and r, "the killed run to finish on the new host", timeout=RECOVERY_BUDGET_SECONDS + 60)
    recovery = time.monotonic() - restarted

    assert done.status == R.PROMOTED, (done.status, done.error, [e.to_json() for e in done.timeline])
    [settled] = claims_of(storage, model, "train")
    assert settled.state == ClaimState.COMPLETED and settled.takeovers >= 1 and settled.owner != claim.owner
    sweeps = [line for line in second.lines if f"sweeper: train/{settled.key}" in line]
    assert sweeps, f"the new host's sweeper never re-sent the work:\n{second.output[-3000:]}"
    snap = assert_invariants(storage, model)
    assert [v.version for v in snap.versions] == [1] and snap.versions[0].run_id == run.run_id
    figures("f", killed_into_train_s=round((killed_wall - claim.started).total_seconds(), 1),
            lease_left_at_kill_s=round((orphan.lease_until - killed_wall).total_seconds(), 1),
            restart_after_kill_s=round(restarted - killed_at, 1), recovery_s=round(recovery, 1),
            takeovers=settled.takeovers, sweeper_resends=len(sweeps), versions_created=len(snap.versions),
            after=snap.describe())
    for line in sweeps:
        print(f"  {line}")
    assert recovery < RECOVERY_BUDGET_SECONDS, f"recovery took {recovery:.0f}s"
