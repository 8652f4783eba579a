"""Storage outage drill: Azurite stops in the middle of a fit and comes back on the same ports and data.

The issue's target: after a storage outage during a stage, the run completes within a minute of
storage returning. The drill holds it to RETURN_BUDGET_SECONDS and prints the figures for
`pytest -s`. Storage is stopped with SIGTERM, not SIGKILL: Azurite saves its metadata (LokiJS)
only every 5 s and on a graceful close, so a SIGKILL also loses writes it had acknowledged,
which Azure storage never does; the drill is about storage being away, not about it forgetting.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from shared import paths, runs
from shared.clock import SYSTEM_CLOCK
from shared.lifecycle.claims import ClaimState
from shared.lifecycle.records import RunRecord, RunStatus
from shared.settings import Settings
from shared.storage import AzureStorage
from tests.e2e.support import STAGES, assert_invariants, claims_of, drop, upload
from tests.e2e.test_lifecycle_drills import (
    MID_FIT_SECONDS,
    figures,
    name,
    slow_data,
    slow_spec,
    start_host,
    train_claim_in_progress,
)
from tests.fixtures.devhost_support import HostProcess, decode_json_message, wait_for

R = RunStatus
# Long enough that the fit ends, fails and cannot release its claim while storage is away (the
# lease must expire, the sweeper re-sends), shorter than the 60 s lease.
OUTAGE_SECONDS = 40.0
OUTAGE_INTO_FIT_SECONDS = MID_FIT_SECONDS  # when storage goes: this long after the train claim started
RETURN_BUDGET_SECONDS = 90.0  # storage back -> run promoted
ISSUE_TARGET_SECONDS = 60.0  # "the run completes within 1 minute of storage returning" (reported, not asserted)
ENDED = frozenset({R.PROMOTED, R.FAILED, R.REJECTED})


@pytest.fixture
def azurites(tmp_path: Path) -> Iterator[list[Azurite]]:
    """A private Azurite (its restarts are appended); every instance is stopped at the end."""
    started = [start_azurite(tmp_path / "azurite", log_path=tmp_path / "azurite.log")]
    yield started
    for instance in started:
        instance.stop()


@pytest.fixture
def hosts() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for process in started:
        process.kill()


def restart(stopped: Azurite, log_path: Path) -> Azurite:
    """The same Azurite again: same data location, same blob and queue ports (the host's connection string)."""
    return start_azurite(stopped.location, blob_port=stopped.blob_port, queue_port=stopped.queue_port,
                         log_path=log_path)


def ended(storage: AzureStorage, model: str, run_id: str) -> RunRecord | None:
    run = runs.get(storage, model, run_id)
    return run if run.status in ENDED else None


def outage_lines(lines: list[str]) -> tuple[dict[str, int], list[str]]:
    """The host's log since the outage began: polling failures counted per queue, the other lines kept."""
    polling: dict[str, int] = {}
    kept = []
    for line in lines:
        if not line.startswith("["):
            continue  # traceback bodies: the full log is saved beside the test
        if "polling failed" in line:
            queue = line.split("queue ", 1)[1].split(" ", 1)[0]
            polling[queue] = polling.get(queue, 0) + 1
        elif any(word in line for word in ("Functions.train", "Functions.export", "Functions.validate",
                                           "Functions.sweeper' (Failed", "sweeper:", "claim", "heartbeat",
                                           "could not", "taken over", "waits")):
            kept.append(line[:260])
    return polling, kept


def test_a_storage_outage_during_train_ends_in_a_promoted_run_soon_after_storage_returns(azurites, hosts, tmp_path):
    azurite = azurites[0]
    storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    model = name("outage")
    host = start_host(hosts, azurite, name("outage"))
    upload(storage, slow_spec(model))
    drop(storage, model, "data.csv", slow_data())
    claim = wait_for(lambda: train_claim_in_progress(storage, model), "the train claim to be in progress", 120)
    host.wait_output("Executed 'Functions.prepare' (Succeeded", timeout=30)
    wait_for(lambda: (SYSTEM_CLOCK.now() - claim.started).total_seconds() >= OUTAGE_INTO_FIT_SECONDS,
             f"the claim to be {OUTAGE_INTO_FIT_SECONDS}s old", timeout=60)
    [run] = runs.list_runs(storage, model)
    assert run.status == R.PREPARED
    lease_at_outage = train_claim_in_progress(storage, model)
    assert lease_at_outage is not None and lease_at_outage.owner == claim.owner

    down_wall, down_log = SYSTEM_CLOCK.now(), len(host.lines)
    went_down = time.monotonic()
    azurite.stop()  # SIGTERM: Azurite closes its ports and saves what it acknowledged
    # The outage itself: its length is what the drill tests, not a wait for something to happen.
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - went_down)))
    assert host.proc.poll() is None, f"the host died during the outage:\n{host.output[-3000:]}"
    azurites.append(restart(azurite, tmp_path / "azurite.log"))
    returned, returned_wall = time.monotonic(), SYSTEM_CLOCK.now()
    outage = returned - went_down

    done = wait_for(lambda: ended(storage, model, run.run_id), "the run to end after storage returned",
                    timeout=RETURN_BUDGET_SECONDS + 60)
    back_to_done = time.monotonic() - returned

    assert done.status == R.PROMOTED, (done.status, done.error, [e.to_json() for e in done.timeline])
    snap = assert_invariants(storage, model)
    assert [v.version for v in snap.versions] == [1] and snap.versions[0].run_id == run.run_id
    [settled] = claims_of(storage, model, "train")
    assert settled.state == ClaimState.COMPLETED and settled.run_id == run.run_id
    poisoned = [decode_json_message(m) for q in paths.STAGE_QUEUES for m in storage.peek(paths.poison(q))]
    assert not [m for m in poisoned if m.get("model") == model], poisoned
    assert host.proc.poll() is None, "the host died after the outage"

    (tmp_path / "host.log").write_text(host.output)
    polling, lines = outage_lines(host.lines[down_log:])
    sweeps = [line for line in lines if f"sweeper: train/{settled.key}" in line]
    unreleased = [line for line in lines if f"claim (stage=train, key={settled.key}) not released" in line]
    if settled.takeovers == 0:
        resumed = "the original invocation finished once storage was back (no takeover)"
    elif sweeps:
        resumed = (f"the sweeper re-sent the stranded or expired claim's message ({len(sweeps)} time(s)); "
                   "its delivery took over")
    elif unreleased:
        resumed = "a redelivery of the original message took over the expired lease"
    else:
        resumed = "the failed invocation released the claim; the host's retry of the message took it over"
    expiry = lease_at_outage.lease_until  # no heartbeat can renew it while storage is away
    lease_left = round((expiry - down_wall).total_seconds(), 1) if expiry else None
    expired_after_return = round((expiry - returned_wall).total_seconds(), 1) if expiry else None
    stage_claims = {stage: [(str(c.state), c.takeovers) for c in claims_of(storage, model, stage)] for stage in STAGES}
    figures("outage", outage_s=round(outage, 1), into_fit_s=round((down_wall - claim.started).total_seconds(), 1),
            lease_left_at_outage_s=lease_left, lease_expired_after_return_s=expired_after_return,
            returned_to_promoted_s=round(back_to_done, 1),
            within_issue_target=back_to_done < ISSUE_TARGET_SECONDS, takeovers=settled.takeovers,
            claims=stage_claims, fit_s=round(snap.versions[0].fit_seconds, 1), after=snap.describe())
    print(f"  resumed by: {resumed}")
    print(f"  storage down at {down_wall.isoformat()}, back at {returned_wall.isoformat()} (UTC)")
    print("  run timeline:")
    for event in done.timeline:
        offset = (event.at - returned_wall).total_seconds()
        print(f"    {event.at.isoformat()} ({offset:+.1f}s from return) {event.status}: {event.detail or ''}")
    print(f"  attempts: {[a.to_json() for a in done.attempts]}")
    print(f"  queue polling failures since the outage began: {polling}")
    print(f"  host log since the outage began (local time; all of it in {tmp_path / 'host.log'}):")
    for line in lines:
        print(f"    {line}")
    assert back_to_done < RETURN_BUDGET_SECONDS, f"the run took {back_to_done:.0f}s after storage returned"
