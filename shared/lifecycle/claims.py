"""Claims: one unit of stage work per (stage, key), owned under a renewable lease.

States: in_progress (an owner holds a lease and renews it while it works) -> completed (the
result answers every later delivery) | released (a transient failure; the next delivery takes
it at once) | failed (given up: the poison handler decided). An in_progress claim whose lease
expired belongs to a crashed worker: the next delivery takes it over, and the sweeper re-sends
its message. Every write is conditional on the ETag the holder last saw, so two owners never
both believe they hold a claim.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field

from shared import paths
from shared.clock import Clock
from shared.errors import Conflict, NotFound, PipelineError
from shared.lifecycle.records import Record
from shared.storage import Storage

log = logging.getLogger("mlops.claims")

LEASE_SECONDS = 60.0  # a crashed owner's work is taken over this long after its last heartbeat
HEARTBEAT_SECONDS = 20.0


class ClaimState(StrEnum):
    """Where a unit of work is."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    RELEASED = "released"
    FAILED = "failed"


class ClaimRecord(Record):
    """The stored claim; `queue` + `payload` are the message that does this work (for the sweeper)."""

    stage: str
    key: str
    state: ClaimState
    owner: str | None = None
    run_id: str | None = None
    model: str | None = None
    started: datetime | None = None
    lease_until: datetime | None = None
    completed: datetime | None = None
    result: dict[str, Any] | None = None
    notes: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    payload: dict[str, Any] | None = None
    takeovers: int = 0
    swept_at: datetime | None = None
    released_at: datetime | None = None
    stranded: bool = False  # released only after storage came back: its message is stuck invisible
    reason: str | None = None


class ClaimLost(Conflict):
    """Another owner took this claim over (our lease had expired); stop and leave the work to it."""

    code = "CLAIM_LOST"


@dataclass
class Held:
    """A claim this process holds: the record as last written and its ETag."""

    claim: ClaimRecord
    etag: str
    taken_over_from: ClaimRecord | None = None  # the crashed or released claim we continue
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Done:
    """The work was completed (or given up for this run) by an earlier delivery."""

    claim: ClaimRecord


@dataclass(frozen=True)
class Busy:
    """Another owner holds a live lease on the work."""

    claim: ClaimRecord


def migrate_claim(body: dict[str, Any], stage: str, key: str) -> ClaimRecord:
    """A claim from storage; markers of an older release ({state, started, result}) stay valid."""
    body = {"stage": stage, "key": key, **body}
    if body.get("state") == "in_progress" and not body.get("lease_until"):
        body["lease_until"] = body.get("started")  # an old marker has no lease: treat it as expired
    return ClaimRecord.model_validate(body)


class ClaimStore:
    """Claims over the storage gateway, with an injected clock."""

    def __init__(self, storage: Storage, clock: Clock, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.storage = storage
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)

    def _read(self, stage: str, key: str) -> tuple[ClaimRecord, str] | None:
        try:
            body, etag = self.storage.read_json(paths.MLOPS, paths.idempotency_marker(stage, key))
        except NotFound:
            return None
        return migrate_claim(body, stage, key), etag

    def get(self, stage: str, key: str) -> ClaimRecord | None:
        """The claim of (stage, key), None when nobody ever claimed it."""
        found = self._read(stage, key)
        return found[0] if found else None

    def acquire(self, stage: str, key: str, *, owner: str, run_id: str | None = None, model: str | None = None,
                queue: str | None = None, payload: dict[str, Any] | None = None) -> Held | Done | Busy:
        """Claim (stage, key) for `owner`: Held (work now), Done (nothing to do) or Busy (someone is on it)."""
        path = paths.idempotency_marker(stage, key)
        for _ in range(20):
            now = self.clock.now()
            fresh = ClaimRecord(stage=stage, key=key, state=ClaimState.IN_PROGRESS, owner=owner, run_id=run_id,
                                model=model, started=now, lease_until=now + self.lease, queue=queue, payload=payload)
            if not self.storage.exists(paths.MLOPS, path):
                # The open-claim pointer first: a claim the sweeper cannot see would wait for the
                # host's own redelivery (10 minutes) after a crash; a pointer without a claim is dropped.
                self._index(fresh)
            try:
                etag = self.storage.write_json(paths.MLOPS, path, fresh.to_json(), create_only=True)
                return Held(fresh, etag)
            except Conflict:
                pass
            found = self._read(stage, key)
            if found is None:
                continue  # never deleted, but be safe: try to create again
            current, etag = found
            outcome = self._decide(current, owner, run_id, now)
            if outcome is not None:
                return outcome
            # released, failed by another run, or a dead owner's expired lease: take it over
            resume = current.state in (ClaimState.IN_PROGRESS, ClaimState.RELEASED) and current.payload is not None
            taken = current.model_copy(update={
                "state": ClaimState.IN_PROGRESS, "owner": owner, "started": now, "lease_until": now + self.lease,
                "takeovers": current.takeovers + 1, "swept_at": None, "reason": None, "stranded": False,
                "run_id": current.run_id if resume else run_id, "queue": current.queue if resume else queue,
                "payload": current.payload if resume else payload,
                "notes": current.notes if resume else {},  # a new run after a failed one starts afresh
            })
            self._index(taken)
            try:
                etag = self.storage.write_json(paths.MLOPS, path, taken.to_json(), if_match=etag)
            except Conflict:
                continue  # someone else moved it first: look again
            return Held(taken, etag, taken_over_from=current)
        raise Conflict(f"claim (stage={stage}, key={key}) kept changing; retry")

    def _decide(self, current: ClaimRecord, owner: str, run_id: str | None, now: datetime) -> Done | Busy | None:
        if current.state == ClaimState.COMPLETED:
            return Done(current)
        if current.state == ClaimState.FAILED and current.run_id == run_id:
            return Done(current)  # this run was given up on; a new run may try again
        lease_live = current.lease_until is not None and current.lease_until > now
        if current.state == ClaimState.IN_PROGRESS and lease_live and current.owner != owner:
            return Busy(current)
        return None

    def _index(self, claim: ClaimRecord) -> None:
        # The sweeper lists only open claims; the pointer is removed once the claim settles.
        self.storage.write_json(paths.MLOPS, paths.open_claim(claim.stage, claim.key),
                                {"stage": claim.stage, "key": claim.key})

    def _write(self, held: Held, update: dict[str, Any]) -> ClaimRecord:
        """Write a change to a held claim under its ETag. Raises ClaimLost."""
        path = paths.idempotency_marker(held.claim.stage, held.claim.key)
        with held.lock:
            for _ in range(5):
                new = held.claim.model_copy(update=update)
                try:
                    held.etag = self.storage.write_json(paths.MLOPS, path, new.to_json(), if_match=held.etag)
                    held.claim = new
                    return new
                except Conflict:
                    found = self._read(held.claim.stage, held.claim.key)
                    if found is None or found[0].owner != held.claim.owner or found[0].state != ClaimState.IN_PROGRESS:
                        raise ClaimLost(f"claim (stage={held.claim.stage}, key={held.claim.key}) was taken over "
                                        f"by owner={found[0].owner if found else None}") from None
                    held.claim, held.etag = found  # the sweeper marked it; we still own it
            raise ClaimLost(f"claim (stage={held.claim.stage}, key={held.claim.key}) kept changing")

    def renew(self, held: Held) -> None:
        """Extend the lease (the heartbeat). Raises ClaimLost."""
        self._write(held, {"lease_until": self.clock.now() + self.lease})

    def note(self, held: Held, **notes: Any) -> None:
        """Record facts a takeover must reuse (e.g. the version this work allocated). Raises ClaimLost."""
        self._write(held, {"notes": {**held.claim.notes, **notes}, "lease_until": self.clock.now() + self.lease})

    def complete(self, held: Held, result: dict[str, Any]) -> None:
        """Settle the claim with its result. Raises ClaimLost."""
        self._write(held, {"state": ClaimState.COMPLETED, "completed": self.clock.now(), "result": result,
                           "lease_until": None})
        self._unindex(held.claim)

    def release(self, held: Held, reason: str, *, keep_trying: float = 0.0, late: bool = False) -> bool:
        """Hand the work back after a transient failure; never raises. False if it could not be written.

        keep_trying > 0: when storage is down, retry every `keep_trying` seconds in the background
        until the lease would expire anyway, so the work is free again as soon as storage returns;
        such a late release is marked `stranded` (the host could not schedule its retry either).
        """
        try:
            self._write(held, {"state": ClaimState.RELEASED, "lease_until": None, "reason": reason,
                               "released_at": self.clock.now(), "stranded": late})
            return True
        except ClaimLost:
            return True  # someone else has it: nothing of ours to hand back
        except (PipelineError, OSError) as exc:
            log.warning("claim (stage=%s, key=%s) not released (%s); %s", held.claim.stage, held.claim.key, exc,
                        "retrying in the background" if keep_trying > 0 else
                        f"its lease expires at {held.claim.lease_until}")
        if keep_trying > 0:
            threading.Thread(target=self._release_later, args=(held, reason, keep_trying), daemon=True,
                             name=f"release-{held.claim.stage}").start()
        return False

    def _release_later(self, held: Held, reason: str, every: float) -> None:
        never = threading.Event()
        while held.claim.lease_until is not None and self.clock.now() < held.claim.lease_until:
            self.clock.wait(never, every)
            if self.release(held, reason, late=True):
                log.info("claim (stage=%s, key=%s) released once storage answered", held.claim.stage, held.claim.key)
                return

    def fail(self, stage: str, key: str, reason: str) -> ClaimRecord | None:
        """Give up on the work (poison): an unsettled claim becomes failed. None if never claimed."""
        for _ in range(10):
            found = self._read(stage, key)
            if found is None:
                return None
            current, etag = found
            if current.state == ClaimState.COMPLETED:
                return current
            failed = current.model_copy(update={"state": ClaimState.FAILED, "lease_until": None, "reason": reason,
                                                "completed": self.clock.now()})
            try:
                self.storage.write_json(paths.MLOPS, paths.idempotency_marker(stage, key), failed.to_json(),
                                        if_match=etag)
            except Conflict:
                continue
            self._unindex(failed)
            return failed
        raise Conflict(f"claim (stage={stage}, key={key}) kept changing; retry")

    def _unindex(self, claim: ClaimRecord) -> None:
        try:
            self.storage.delete(paths.MLOPS, paths.open_claim(claim.stage, claim.key))
        except (PipelineError, OSError) as exc:  # the sweeper drops stale pointers too
            log.info("open-claim pointer (stage=%s, key=%s) left for the sweeper: %s", claim.stage, claim.key, exc)

    def open_claims(self) -> list[tuple[ClaimRecord, str]]:
        """Every unsettled claim (in progress or released), dropping pointers of settled ones on the way."""
        out = []
        for blob in self.storage.list(paths.MLOPS, paths.open_claims_prefix()):
            stage, _, key = blob.name[len(paths.open_claims_prefix()):].removesuffix(".json").partition("/")
            found = self._read(stage, key)
            if found is None:
                # acquire writes the pointer just before the claim: only an old orphan is dropped
                age = self.clock.now() - blob.last_modified if blob.last_modified else self.lease
                if age >= self.lease:
                    self.storage.delete(paths.MLOPS, blob.name)
                continue
            if found[0].state not in (ClaimState.IN_PROGRESS, ClaimState.RELEASED):
                self.storage.delete(paths.MLOPS, blob.name)
                continue
            out.append(found)
        return out

    def mark_swept(self, claim: ClaimRecord, etag: str) -> bool:
        """Note that the sweeper re-sent this claim's message; False if the claim moved meanwhile."""
        swept = claim.model_copy(update={"swept_at": self.clock.now()})
        try:
            self.storage.write_json(paths.MLOPS, paths.idempotency_marker(claim.stage, claim.key), swept.to_json(),
                                    if_match=etag)
            return True
        except Conflict:
            return False

    @contextmanager
    def heartbeat(self, held: Held, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Renew the lease every `every` seconds while the block runs (no thread when every <= 0)."""
        if every <= 0:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not self.clock.wait(stop, every):
                try:
                    self.renew(held)
                except ClaimLost:
                    log.warning("claim (stage=%s, key=%s) lost; the new owner finishes it", held.claim.stage,
                                held.claim.key)
                    return
                except (PipelineError, OSError) as exc:  # storage hiccup: the next beat may succeed
                    log.warning("heartbeat of claim (stage=%s, key=%s) failed: %s", held.claim.stage,
                                held.claim.key, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat-{held.claim.stage}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
