"""Queue output bindings: written after the function succeeds, then the host's own listener is woken.

As the Functions host does it: the worker hands each `func.Out` value to the host encoded by the
azure-functions library's converter (QueueMessageOutConverter: a str is one message, a list a JSON
array of messages); the host writes them only when the function succeeded, before it completes the
trigger (so a failed write fails the invocation and the trigger is retried). Writing a message also
notifies the WebJobs SDK's SharedQueueWatcher, which makes this host's QueueListener for that queue
poll at once instead of at the end of its back-off (QueueListener.Notify in azure-webjobs-sdk /
the Storage Queues extension). Message text is base64-encoded when host.json says messageEncoding
base64, as the extension's QueueMessage converter does.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions.queue import QueueMessageOutConverter

from devhost.config import DevHostError, resolve

log = logging.getLogger("devhost")

T = TypeVar("T")
OUTPUT_TYPES = ("queue",)  # output binding types devhost writes


class Out(func.Out[T], Generic[T]):
    """The worker's Out: holds what the function set."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]  # None until set, as the worker's Out


class QueueWatcher:
    """SharedQueueWatcher: who to wake when this host writes to a queue."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def register(self, queue: str, notify: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.setdefault(queue.lower(), []).append(notify)

    def notify(self, queue: str) -> None:
        with self._lock:
            listeners = list(self._listeners.get(queue.lower(), ()))
        for wake in listeners:
            wake()


def message_texts(value: Any) -> list[str]:
    """The messages one Out value makes, through the worker's own converter."""
    datum = QueueMessageOutConverter.encode(value, expected_type=None)
    if datum.type == "string":
        return [str(datum.value)]
    if datum.type == "bytes":
        return [bytes(datum.value).decode("utf-8")]
    items = json.loads(datum.value)  # a list: str items, or {"id", "body"} for QueueMessage items
    return [item if isinstance(item, str) else str(item["body"]) for item in items]


class OutputWriter:
    """Writes a function's queue output bindings after it succeeded."""

    def __init__(self, storage_for: Callable[[str], Any], message_encoding: str, watcher: QueueWatcher) -> None:
        self._storage_for = storage_for
        self._encoding = message_encoding
        self.watcher = watcher

    def write(self, function: str, bindings: tuple[dict[str, Any], ...], values: dict[str, Out[Any]]) -> None:
        """Raises what storage raises: the invocation then counts as failed, as on the host."""
        for binding in bindings:
            value = values[binding["name"]].get()
            if value is None:
                continue  # never set: the host writes nothing
            queue = resolve(str(binding["queueName"]), f"function {function} output {binding['name']}").lower()
            storage = self._storage_for(str(binding.get("connection") or "AzureWebJobsStorage"))
            texts = message_texts(value)
            for text in texts:
                storage.enqueue_raw(queue, self._encode(text))
            if texts:
                self.watcher.notify(queue)

    def _encode(self, text: str) -> str:
        if self._encoding == "base64":
            return base64.b64encode(text.encode("utf-8")).decode("ascii")
        return text


def check_output(function: str, binding: dict[str, Any]) -> None:
    """DevHostError for an output binding devhost cannot write."""
    if binding.get("type") not in OUTPUT_TYPES:
        raise DevHostError(f"function {function}: output binding type {binding.get('type')} "
                           f"(name={binding.get('name')}) is not supported by devhost "
                           f"(supported: {', '.join(OUTPUT_TYPES)} and the http $return)")
