"""Claims on the storage fake: one owner at a time, leases, takeovers, releases, the sweeper's view."""
from __future__ import annotations

import pytest

from shared import paths
from shared.clock import ManualClock
from shared.errors import StorageUnreachable
from shared.lifecycle.claims import Busy, ClaimLost, ClaimState, ClaimStore, Done, Held
from shared.lifecycle.stages import Context
from shared.lifecycle.sweeper import sweep
from shared.memory_storage import MemoryStorage
from shared.settings import Settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> ClaimStore:
    return ClaimStore(MemoryStorage(clock=clock.now), clock, lease_seconds=60)


def claim(store: ClaimStore, owner: str, run: str = "run-a") -> Held | Done | Busy:
    return store.acquire("train", "k", owner=owner, run_id=run, model="m", queue=paths.TRAIN_QUEUE,
                         payload={"run_id": run})


def test_a_second_owner_is_busy_while_the_lease_lives_and_takes_over_when_it_expires(store, clock):
    first = claim(store, "w1")
    assert isinstance(first, Held)
    assert isinstance(claim(store, "w2"), Busy)
    clock.advance(30)
    store.renew(first)
    clock.advance(45)
    assert isinstance(claim(store, "w2"), Busy)  # renewed 45 s ago: still alive
    clock.advance(16)
    second = claim(store, "w2", run="run-b")
    assert isinstance(second, Held) and second.taken_over_from is not None
    assert second.claim.run_id == "run-a" and second.claim.payload == {"run_id": "run-a"}  # continues run a
    with pytest.raises(ClaimLost):
        store.complete(first, {"outcome": "late"})
    store.complete(second, {"outcome": "trained"})
    done = claim(store, "w3")
    assert isinstance(done, Done) and done.claim.result == {"outcome": "trained"}


def test_notes_survive_a_takeover_but_not_a_new_run_after_a_failure(store, clock):
    first = claim(store, "w1")
    assert isinstance(first, Held)
    store.note(first, version=7)
    clock.advance(61)
    second = claim(store, "w2")
    assert isinstance(second, Held) and second.claim.notes == {"version": 7}
    store.fail("train", "k", "poisoned")
    assert isinstance(claim(store, "w3", run="run-a"), Done)  # the failed run itself: nothing to do
    fresh = claim(store, "w4", run="run-c")
    assert isinstance(fresh, Held) and fresh.claim.notes == {} and fresh.claim.run_id == "run-c"


def held_in_context(clock: ManualClock) -> tuple[MemoryStorage, Context, Held]:
    storage = MemoryStorage(clock=clock.now)
    ctx = Context(storage, Settings.from_env({}), clock, heartbeat_seconds=0)
    held = ctx.claims.acquire("train", "k", owner="w1", run_id="r", model="m", queue=paths.TRAIN_QUEUE,
                              payload={"run_id": "r"})
    assert isinstance(held, Held)
    return storage, ctx, held


def test_a_release_that_storage_refused_is_stranded_once_written_and_resent_by_the_sweeper_at_once(clock):
    storage, ctx, held = held_in_context(clock)
    storage.outage = True
    assert ctx.claims.release(held, "StorageUnreachable") is False
    storage.outage = False
    assert ctx.claims.release(held, "StorageUnreachable", late=True) is True  # what the background retry does
    clock.advance(3)
    assert sweep(ctx).resent == ["train/k"]
    assert storage.queue_length(paths.TRAIN_QUEUE) == 1


def test_an_ordinary_release_is_left_to_the_hosts_retry_for_a_while(clock):
    storage, ctx, held = held_in_context(clock)
    assert ctx.claims.release(held, "TimeoutError") is True
    clock.advance(10)
    assert sweep(ctx).resent == []
    clock.advance(40)
    assert sweep(ctx).resent == ["train/k"]
    assert ctx.claims.get("train", "k").state == ClaimState.RELEASED  # type: ignore[union-attr]


def test_claim_writes_during_an_outage_raise_storage_unreachable_not_a_lost_claim(store):
    held = claim(store, "w1")
    assert isinstance(held, Held)
    store.storage.outage = True  # type: ignore[attr-defined]
    with pytest.raises(StorageUnreachable):
        store.renew(held)


def test_the_heartbeat_keeps_a_claim_alive_through_work_longer_than_the_lease() -> None:
    from datetime import UTC, datetime

    from devhost.clock import FakeClock
    from tests.fixtures.devhost_support import wait_for

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = ClaimStore(MemoryStorage(clock=clock.now), clock, lease_seconds=60)
    held = claim(store, "worker")
    assert isinstance(held, Held)
    with store.heartbeat(held, every=20):
        for _ in range(6):  # 120 s of work: twice the lease
            clock.advance(20)
            wait_for(lambda: (c := store.get("train", "k")) is not None and c.lease_until is not None
                     and (c.lease_until - clock.now()).total_seconds() >= 59, "the heartbeat to renew the lease")
            assert isinstance(claim(store, "duplicate"), Busy)
    clock.advance(61)  # the work ended without completing (a crash): the lease runs out
    assert isinstance(claim(store, "next", run="run-b"), Held)
