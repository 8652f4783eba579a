"""Queue triggers: batches, concurrency, retries with dequeue counts, poison queues, back-off."""
from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from dataclasses import dataclass, field

from azure.functions.queue import QueueMessage

from devhost.clock import Clock
from devhost.config import QueueOptions, resolve
from devhost.index import FunctionSpec, Invoker
from shared.errors import PipelineError
from shared.storage import AzureStorage, QueuedMessage

log = logging.getLogger("devhost")

# The Functions host hides a message for 10 minutes while it runs and renews that halfway.
LEASE_SECONDS = 600
MIN_POLLING_INTERVAL = 0.1


@dataclass
class _InFlight:
    message: QueuedMessage
    received: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False


class QueueListener:
    """Polls one queue for one function, as the host's QueueListener does."""

    def __init__(self, spec: FunctionSpec, storage: AzureStorage, options: QueueOptions,
                 invoker: Invoker, clock: Clock) -> None:
        self.spec = spec
        self.queue = resolve(str(spec.trigger["queueName"]), f"function {spec.name} queueName").lower()
        self.poison_queue = f"{self.queue}-poison"
        self._storage = storage
        self._opt = options
        self._invoke = invoker
        self._clock = clock
        self._inflight: dict[str, _InFlight] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = False  # notified of a new message: poll at once, back-off reset
        self.polls = 0  # receive calls so far (how often the listener looked)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"queue-{spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """This host just wrote a message to the queue (SharedQueueWatcher): poll now, not after the back-off."""
        self._hurry = True
        self._wake.set()

    def stop_polling(self) -> None:
        """Receive nothing more; running invocations continue."""
        self._stopping = True
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)

    def release_unfinished(self) -> int:
        """Make messages whose invocation is still running visible again now; returns how many."""
        released = 0
        for entry in self._entries():
            with entry.lock:
                if entry.finished:
                    continue
                entry.finished = True  # the late-finishing invocation must not delete or poison it
                try:
                    self._storage.release(self.queue, entry.message, visibility_timeout=0)
                    released += 1
                    log.warning("Released message (queue=%s, id=%s): its invocation of %s did not finish "
                                "before shutdown; it is visible again", self.queue, entry.message.id, self.spec.name)
                except PipelineError as exc:
                    log.error("could not release message (queue=%s, id=%s): %s", self.queue, entry.message.id, exc)
        return released

    def _entries(self) -> list[_InFlight]:
        with self._lock:
            return list(self._inflight.values())

    def _run(self) -> None:
        delay = MIN_POLLING_INTERVAL
        while not self._stopping:
            self._wake.clear()
            if self._poll():
                delay = MIN_POLLING_INTERVAL  # activity resets the back-off
                continue
            self._clock.wait(self._wake, delay)
            if self._hurry:
                self._hurry, delay = False, MIN_POLLING_INTERVAL
                continue
            # idle: exponential back-off up to maxPollingInterval, as the host's queue listener does
            delay = min(delay * 2, max(self._opt.max_polling_interval, MIN_POLLING_INTERVAL))

    def _poll(self) -> int:
        """Receive and dispatch one batch; returns how many messages came."""
        try:
            self._renew_leases()
            # the Functions host fetches a new batch once in-flight drops to newBatchThreshold,
            # so up to batchSize + newBatchThreshold invocations can run at once
            if len(self._inflight) > self._opt.new_batch_threshold:
                return 0
            self.polls += 1
            batch = self._storage.receive(self.queue, max_messages=min(self._opt.batch_size, 32),
                                          visibility_timeout=LEASE_SECONDS)
            for message in batch:
                if self._stopping:  # received while stopping: hand it straight back
                    self._storage.release(self.queue, message, visibility_timeout=0)
                else:
                    self._dispatch(message)
            return len(batch)
        except Exception as exc:  # keep polling: storage may come back
            log.warning("queue %s (function %s): polling failed: %s", self.queue, self.spec.name, exc)
            return 0

    def _renew_leases(self) -> None:
        now = time.monotonic()
        for entry in self._entries():
            if now - entry.received < LEASE_SECONDS / 2:
                continue
            with entry.lock:
                if not entry.finished:
                    entry.message = self._storage.renew(self.queue, entry.message, visibility_timeout=LEASE_SECONDS)
                    entry.received = now

    def _decode(self, content: str) -> bytes:
        if self._opt.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"Message could not be decoded: not valid base64 ({exc}) while host.json "
                             "extensions.queues.messageEncoding is base64") from exc

    def _dispatch(self, message: QueuedMessage) -> None:
        if message.dequeue_count > self._opt.max_dequeue_count:
            # the Functions host poisons, without running it, a message already dequeued more than
            # maxDequeueCount times (its earlier invocations never completed)
            self._poison(message, f"Message dequeue count {message.dequeue_count} exceeds MaxDequeueCount")
            return
        try:
            body = self._decode(message.content)
        except ValueError as exc:
            # the Functions host moves a message it cannot decode to the poison queue
            self._poison(message, str(exc))
            return
        entry = _InFlight(message, time.monotonic())
        with self._lock:
            self._inflight[message.id] = entry
        threading.Thread(target=self._process, args=(entry, body), daemon=True,
                         name=f"invoke-{self.spec.name}").start()

    def _process(self, entry: _InFlight, body: bytes) -> None:
        m = entry.message
        msg = QueueMessage(  # the worker's QueueMessage, with the trigger metadata
            id=m.id, body=body, pop_receipt=m.pop_receipt, dequeue_count=m.dequeue_count,
            insertion_time=m.insertion_time, expiration_time=m.expiration_time, time_next_visible=m.next_visible_on,
        )
        try:
            try:
                self._invoke(self.spec, f"New queue message detected on '{self.queue}'.", msg)
                succeeded = True
            except Exception:
                succeeded = False
            with entry.lock:
                if entry.finished:
                    return  # released at shutdown
                entry.finished = True
                self._complete(entry.message, succeeded)
        finally:
            with self._lock:
                self._inflight.pop(m.id, None)
            self._wake.set()

    def _complete(self, message: QueuedMessage, succeeded: bool) -> None:
        try:
            if succeeded:
                self._storage.delete_message(self.queue, message)
            elif message.dequeue_count >= self._opt.max_dequeue_count:
                # the Functions host poisons a message after it FAILED maxDequeueCount times
                self._poison(message, f"Message has reached MaxDequeueCount of {self._opt.max_dequeue_count}")
            else:
                self._storage.release(self.queue, message, visibility_timeout=int(self._opt.visibility_timeout))
        except PipelineError as exc:
            log.error("queue %s: could not complete message id=%s: %s", self.queue, message.id, exc)

    def _poison(self, message: QueuedMessage, reason: str) -> None:
        log.error("%s. Moving message (queue=%s, id=%s) to queue '%s'.", reason, self.queue, message.id,
                  self.poison_queue)
        self._storage.enqueue_raw(self.poison_queue, message.content)  # the original text, still encoded
        self._storage.delete_message(self.queue, message)

