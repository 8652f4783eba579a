"""The one wrapper every queue stage runs in, so no stage can forget a branch of its claim.

    claim -> Held:  heartbeat while `work` runs -> complete       (work must be resumable)
          -> Done:  `on_done` (a duplicate: record it, nothing else)
          -> Busy:  re-send the message with a delay and return    (waiting burns no dequeue count)
    work raises DataRejected / ModelRejected -> `on_reject`, claim completed: rejected at once
    work raises a transient error (storage, timeout, lost race) -> attempt noted, claim released, re-raised
    work raises anything else -> `on_fail`, claim failed: a bug fails identically on every try
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from shared import runs
from shared.clock import SYSTEM_CLOCK, Clock
from shared.errors import Conflict, DataRejected, IllegalTransition, InProgress, ModelRejected, StorageUnreachable
from shared.learner import Learner  # light: its heavy imports happen inside its methods
from shared.lifecycle.claims import HEARTBEAT_SECONDS, LEASE_SECONDS, Busy, ClaimLost, ClaimStore, Done, Held
from shared.messages import Message
from shared.outbox import Outbox
from shared.settings import Settings
from shared.storage import Storage

log = logging.getLogger("mlops.stages")

M = TypeVar("M", bound=Message)
MAX_DEFER_SECONDS = 10  # a duplicate learns the outcome at most this long after the original ends
MIN_DEFER_SECONDS = 2
RELEASE_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Context:
    """What a stage needs from its environment; tests inject the storage fake, a clock and a learner."""

    storage: Storage
    settings: Settings
    clock: Clock = SYSTEM_CLOCK
    ml: Learner | None = None  # None: the real one
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    lease_seconds: float = LEASE_SECONDS
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    outbox: Outbox | None = None  # None: messages go out through the storage SDK at once

    def send(self, queue: str, payload: Mapping[str, Any]) -> None:
        """Hand a message to the next stage: through the invocation's output binding when it has one."""
        if self.outbox is None:
            self.storage.enqueue(queue, dict(payload))
        else:
            self.outbox.send(queue, payload)

    def with_outbox(self) -> tuple[Context, Outbox]:
        """This context sending through a new outbox (a function with queue output bindings)."""
        outbox = Outbox()
        return replace(self, outbox=outbox), outbox

    @property
    def claims(self) -> ClaimStore:
        return ClaimStore(self.storage, self.clock, lease_seconds=self.lease_seconds)

    def learner(self) -> Learner:
        return self.ml if self.ml is not None else Learner()

    def fresh(self) -> Context:
        """The same context for another invocation (its own claim owner, no outbox)."""
        return replace(self, owner=uuid.uuid4().hex, outbox=None)


def app_context() -> Context:
    """The context of the running app: the process-wide storage gateway and settings."""
    from shared.settings import get_settings
    from shared.storage import get_storage

    return Context(get_storage(), get_settings())


class Stage(Protocol, Generic[M]):
    """A claimed unit of work of one queue."""

    name: str
    queue: str
    message: type[M]

    def key(self, request: M) -> str: ...
    def run_of(self, request: M) -> tuple[str, str]:
        """(model, run id) the request belongs to."""
        ...
    def work(self, ctx: Context, request: M, held: Held) -> dict[str, Any]: ...
    def on_done(self, ctx: Context, request: M, result: dict[str, Any], by_run: str | None) -> None: ...
    def on_reject(self, ctx: Context, request: M, held: Held, exc: DataRejected | ModelRejected) -> dict[str, Any]: ...
    def on_fail(self, ctx: Context, request: M, notes: dict[str, Any], reason: str) -> None: ...


def is_transient(exc: BaseException) -> bool:
    """True for failures a later try may not repeat: storage, network, timeouts, lost races."""
    if isinstance(exc, IllegalTransition):
        return False
    return isinstance(exc, (StorageUnreachable, Conflict, InProgress, TimeoutError, ConnectionError, MemoryError))


def run_stage(ctx: Context, stage: Stage[M], request: M, *, attempt: int = 1) -> dict[str, Any]:
    """Run one delivery of a stage message; returns what happened (raises only transient errors)."""
    model, run_id = stage.run_of(request)
    key = stage.key(request)
    got = ctx.claims.acquire(stage.name, key, owner=ctx.owner, run_id=run_id, model=model, queue=stage.queue,
                             payload=request.to_payload())
    if isinstance(got, Busy):
        return _defer(ctx, stage, request, got)
    if isinstance(got, Done):
        result = got.claim.result or {"outcome": str(got.claim.state), "reason": got.claim.reason}
        stage.on_done(ctx, request, result, got.claim.run_id)
        return {**result, "outcome": "duplicate", "of": result.get("outcome")}
    if got.taken_over_from is not None and got.claim.run_id != run_id and got.claim.payload is not None:
        # We continue a crashed run's work under its own run; ours is a duplicate of it.
        original = stage.message.model_validate(got.claim.payload)
        log.info("%s: key=%s taken over from a dead owner; continuing run %s", stage.name, key, got.claim.run_id)
        stage.on_done(ctx, request, {"outcome": "in_progress", **got.claim.notes}, got.claim.run_id)
        request = original
        run_id = got.claim.run_id or run_id
    return _work(ctx, stage, request, got, attempt)


def _work(ctx: Context, stage: Stage[M], request: M, held: Held, attempt: int) -> dict[str, Any]:
    model, run_id = stage.run_of(request)
    claims = ctx.claims
    try:
        with claims.heartbeat(held, ctx.heartbeat_seconds):
            result = stage.work(ctx, request, held)
    except ClaimLost as exc:
        log.warning("%s: %s; leaving the work to the new owner", stage.name, exc.message)
        return {"outcome": "lost", "reason": exc.message}
    except (DataRejected, ModelRejected) as exc:
        result = stage.on_reject(ctx, request, held, exc)
    except Exception as exc:
        if is_transient(exc):
            note_attempt(ctx, model, run_id, stage.name, attempt, exc, transient=True)
            claims.release(held, f"{type(exc).__name__}: {exc}", keep_trying=RELEASE_RETRY_SECONDS
                           if ctx.heartbeat_seconds > 0 else 0.0)
            raise
        log.exception("%s: run %s failed with an error no retry can fix", stage.name, run_id)
        note_attempt(ctx, model, run_id, stage.name, attempt, exc, transient=False)
        reason = f"{stage.name} failed: {type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        stage.on_fail(ctx, request, held.claim.notes, reason)
        claims.fail(stage.name, held.claim.key, reason)
        return {"outcome": "failed", "reason": reason}
    claims.complete(held, result)
    return result


def note_attempt(ctx: Context, model: str, run_id: str, stage: str, attempt: int, exc: BaseException, *,
                 transient: bool) -> None:
    """Keep a failed try on its run; never raises (the original error matters more)."""
    try:
        runs.add_attempt(ctx.storage, ctx.clock, model, run_id, stage, attempt, exc, transient=transient)
    except Exception:  # never hide the original error behind a bookkeeping one
        log.exception("%s: could not note the failed attempt of run %s", stage, run_id)


def _defer(ctx: Context, stage: Stage[M], request: M, busy: Busy) -> dict[str, Any]:
    lease_left = (busy.claim.lease_until - ctx.clock.now()).total_seconds() if busy.claim.lease_until else 0
    delay = int(min(MAX_DEFER_SECONDS, max(MIN_DEFER_SECONDS, lease_left)))
    deferrals = getattr(request, "deferrals", 0) + 1
    ctx.storage.enqueue(stage.queue, {**request.to_payload(), "deferrals": deferrals}, delay_seconds=delay)
    log.info("%s: key=%s is being worked on by run %s; this delivery waits %ss (deferral %s)",
             stage.name, stage.key(request), busy.claim.run_id, delay, deferrals)
    return {"outcome": "deferred", "delay_seconds": delay, "deferrals": deferrals}
