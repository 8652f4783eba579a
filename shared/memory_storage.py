"""MemoryStorage: the Storage protocol in memory, for fast unit tests and model-based (hypothesis) tests.

It passes the same contract tests as AzureStorage over Azurite (tests/contract), including Azure's
quirks: If-Match on a missing blob is a Conflict (Azure answers 412), a stale pop receipt is NotFound
(Azure documents 404), a pop receipt stays valid after the visibility timeout until the message is
received again, list is in name order. Queue visibility follows an injected clock.

Not emulated: queue/container name rules, message size limits, content types, snapshots, leases.

For tests, not in the protocol: `fault(op, container_or_queue, path_or_message_id)` runs before every
operation (raise from it to simulate a crash or an error), `outage = True` makes every operation raise
StorageUnreachable, and blob_names / queue_texts / queue_length inspect the state without a fault.
"""
from __future__ import annotations

import builtins
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.clock import utc_now
from shared.errors import Conflict, NotFound, StorageUnreachable
from shared.storage import (
    Blob,
    BlobInfo,
    BlobStream,
    JsonBlobs,
    QueuedMessage,
    blob_label,
    encode_message,
    message_label,
    stale_receipt,
)

# Azure Queue's default time-to-live: a message nobody deletes disappears after 7 days.
MESSAGE_TTL = timedelta(days=7)
# Get Messages and Peek Messages accept 1..32 messages per call.
MAX_MESSAGES = 32

Fault = Callable[[str, str, str], None]


@dataclass(frozen=True)
class _StoredBlob:
    data: bytes
    etag: str
    last_modified: datetime


@dataclass
class _StoredMessage:
    id: str
    content: str
    inserted: datetime
    expires: datetime
    next_visible: datetime
    dequeue_count: int = 0
    pop_receipt: str | None = None  # only the latest receipt deletes or updates

    def snapshot(self) -> QueuedMessage:
        return QueuedMessage(
            id=self.id, pop_receipt=self.pop_receipt or "", content=self.content,
            dequeue_count=self.dequeue_count, insertion_time=self.inserted,
            expiration_time=self.expires, next_visible_on=self.next_visible,
        )


class MemoryStorage(JsonBlobs):
    """Storage in memory, thread-safe under one lock, with queue visibility driven by `clock`."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.blob_endpoint = "memory://blobs"
        self.queue_endpoint = "memory://queues"
        # called as fault(op, container_or_queue, path_or_message_id) before each operation; ops:
        # read, write, copy, delete, exists, list, enqueue, receive, delete_message, release, renew, peek, ping
        # (the JSON helpers reach read/write, enqueue_raw is "enqueue", list passes the prefix, copy passes
        # the destination's container and path, open_read and each range it reads are "read")
        self.fault: Fault | None = None
        self.outage = False
        self._clock = clock
        self._lock = threading.Lock()
        self._containers: dict[str, dict[str, _StoredBlob]] = {}
        self._queues: dict[str, builtins.list[_StoredMessage]] = {}
        self._writes = 0

    # -- tests ------------------------------------------------------------------------------

    def blob_names(self, container: str, prefix: str = "") -> builtins.list[str]:
        """Names of the blobs under a prefix, in name order (no fault, no outage)."""
        with self._lock:
            return sorted(n for n in self._containers.get(container, {}) if n.startswith(prefix))

    def queue_texts(self, queue: str) -> builtins.list[str]:
        """Texts of every message in the queue, invisible ones included, in insertion order."""
        with self._lock:
            return [m.content for m in self._live(queue)]

    def queue_length(self, queue: str) -> int:
        """How many messages the queue holds, invisible ones included."""
        with self._lock:
            return len(self._live(queue))

    def _before(self, op: str, endpoint: str, where: str, what: str) -> None:
        # outside the lock: a fault hook may itself use this storage
        if self.outage:
            raise StorageUnreachable(
                f"storage (endpoint={endpoint}) is unreachable: MemoryStorage.outage is set (simulated outage)"
            )
        if self.fault is not None:
            self.fault(op, where, what)

    # -- blobs ------------------------------------------------------------------------------

    def read(self, container: str, path: str) -> Blob:
        self._before("read", self.blob_endpoint, container, path)
        with self._lock:
            stored = self._containers.get(container, {}).get(path)
        if stored is None:
            raise NotFound(f"{blob_label(container, path)} not found")
        return Blob(data=stored.data, etag=stored.etag)

    def open_read(self, container: str, path: str) -> BlobStream:
        opened = self.read(container, path)

        def fetch_into(offset: int, view: memoryview) -> int:
            self._before("read", self.blob_endpoint, container, path)
            with self._lock:
                stored = self._containers.get(container, {}).get(path)
            if stored is None or stored.etag != opened.etag:  # Azure: the ranged read's If-Match fails (412)
                raise Conflict(f"{blob_label(container, path)} was changed by someone else (precondition failed)")
            data = stored.data[offset : offset + len(view)]
            view[: len(data)] = data
            return len(data)

        return BlobStream(fetch_into, len(opened.data), opened.etag)

    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str:
        self._before("write", self.blob_endpoint, container, path)
        with self._lock:
            blobs = self._containers.setdefault(container, {})
            current = blobs.get(path)
            if create_only and current is not None:
                raise Conflict(f"{blob_label(container, path)} was changed by someone else "
                               "(ETag or existence condition failed)")
            if if_match is not None and not _matches(current, if_match):
                raise Conflict(f"{blob_label(container, path)} was changed by someone else (precondition failed)")
            etag = self._new_etag()
            blobs[path] = _StoredBlob(data=bytes(data), etag=etag, last_modified=self._clock())
            return etag

    def _new_etag(self) -> str:
        # Azure's ETags are opaque quoted strings, unique per write (under the lock)
        self._writes += 1
        return f'"0x{self._writes:X}"'

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None,
    ) -> str:
        data = b"".join(chunks)  # an exception from the chunks leaves the blob as it was, as Azure's commit does
        return self.write(container, path, data, content_type=content_type)

    def copy(self, container: str, path: str, to_container: str, to_path: str, *, if_match: str | None = None) -> str:
        self._before("copy", self.blob_endpoint, to_container, to_path)
        with self._lock:
            source = self._containers.get(container, {}).get(path)
            if source is None:  # Azure: 404 CannotVerifyCopySource (Azurite: BlobNotFound), if_match or not
                raise NotFound(f"{blob_label(container, path)} not found")
            if if_match is not None and not _matches(source, if_match):  # Azure: 412 SourceConditionNotMet
                raise Conflict(f"{blob_label(container, path)} was changed by someone else (precondition failed)")
            etag = self._new_etag()
            self._containers.setdefault(to_container, {})[to_path] = _StoredBlob(
                data=source.data, etag=etag, last_modified=self._clock())
            return etag

    def exists(self, container: str, path: str) -> bool:
        self._before("exists", self.blob_endpoint, container, path)
        with self._lock:
            return path in self._containers.get(container, {})

    def list(self, container: str, prefix: str = "") -> builtins.list[BlobInfo]:
        self._before("list", self.blob_endpoint, container, prefix)
        with self._lock:
            blobs = self._containers.get(container, {})
            return [
                BlobInfo(container, name, b.etag, len(b.data), b.last_modified)
                for name, b in sorted(blobs.items())  # Azure lists in name order
                if name.startswith(prefix)
            ]

    def delete(self, container: str, path: str, *, if_match: str | None = None) -> bool:
        self._before("delete", self.blob_endpoint, container, path)
        with self._lock:
            blobs = self._containers.get(container, {})
            current = blobs.get(path)
            if if_match is not None and not _matches(current, if_match):
                # Azure answers 412 to If-Match on a missing blob too, not 404
                raise Conflict(f"{blob_label(container, path)} was changed by someone else (precondition failed)")
            if current is None:
                return False
            del blobs[path]
            return True

    # -- queues -----------------------------------------------------------------------------

    def _live(self, queue: str) -> builtins.list[_StoredMessage]:
        # expired messages vanish, as Azure deletes them after their time-to-live
        now = self._clock()
        messages = self._queues.get(queue, [])
        messages[:] = [m for m in messages if m.expires > now]
        return messages

    def _owned(self, queue: str, message: QueuedMessage) -> _StoredMessage:
        for stored in self._live(queue):
            if stored.id == message.id:
                if stored.pop_receipt is None or stored.pop_receipt != message.pop_receipt:
                    raise stale_receipt(message_label(queue, message.id))
                return stored
        raise NotFound(f"{message_label(queue, message.id)} not found")

    def enqueue(self, queue: str, payload: Any, *, delay_seconds: int = 0) -> str:
        return self.enqueue_raw(queue, encode_message(payload), delay_seconds=delay_seconds)

    def enqueue_raw(self, queue: str, text: str, *, delay_seconds: int = 0) -> str:
        message_id = str(uuid.uuid4())
        self._before("enqueue", self.queue_endpoint, queue, message_id)
        with self._lock:
            now = self._clock()
            self._queues.setdefault(queue, []).append(_StoredMessage(
                id=message_id, content=text, inserted=now, expires=now + MESSAGE_TTL,
                next_visible=now + timedelta(seconds=delay_seconds),
            ))
        return message_id

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: int) -> builtins.list[QueuedMessage]:
        _check_count(max_messages)
        self._before("receive", self.queue_endpoint, queue, "")
        with self._lock:
            now = self._clock()
            visible = [m for m in self._live(queue) if m.next_visible <= now][:max_messages]
            for stored in visible:
                stored.dequeue_count += 1
                stored.pop_receipt = uuid.uuid4().hex
                stored.next_visible = now + timedelta(seconds=visibility_timeout)
            return [m.snapshot() for m in visible]

    def delete_message(self, queue: str, message: QueuedMessage) -> None:
        self._before("delete_message", self.queue_endpoint, queue, message.id)
        with self._lock:
            self._queues[queue].remove(self._owned(queue, message))

    def release(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> None:
        self._before("release", self.queue_endpoint, queue, message.id)
        with self._lock:
            self._update(queue, message, visibility_timeout)

    def renew(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> QueuedMessage:
        self._before("renew", self.queue_endpoint, queue, message.id)
        with self._lock:
            return self._update(queue, message, visibility_timeout)

    def _update(self, queue: str, message: QueuedMessage, visibility_timeout: int) -> QueuedMessage:
        # Update Message: hidden from now, a new pop receipt, the dequeue count unchanged
        stored = self._owned(queue, message)
        stored.pop_receipt = uuid.uuid4().hex
        stored.next_visible = self._clock() + timedelta(seconds=visibility_timeout)
        return stored.snapshot()

    def peek(self, queue: str, max_messages: int = 32) -> builtins.list[str]:
        _check_count(max_messages)
        self._before("peek", self.queue_endpoint, queue, "")
        with self._lock:
            now = self._clock()
            return [m.content for m in self._live(queue) if m.next_visible <= now][:max_messages]

    def ping(self) -> None:
        self._before("ping", self.blob_endpoint, "", "")


def _matches(current: _StoredBlob | None, if_match: str) -> bool:
    # "*" matches any existing blob; any ETag fails on a missing one (Azure: 412)
    return current is not None and (if_match == "*" or current.etag == if_match)


def _check_count(max_messages: int) -> None:
    # Azure rejects these with 400; failing loudly here keeps a unit test from passing on a call Azure refuses
    if not 1 <= max_messages <= MAX_MESSAGES:
        raise ValueError(f"max_messages={max_messages} is out of range: Azure Queue accepts 1 to {MAX_MESSAGES}")
