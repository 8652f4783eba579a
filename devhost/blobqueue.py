"""The host's blob trigger queue: `azure-webjobs-blobtrigger-<hostid>`, served by a QueueListener.

On Azure the blobs extension turns every blob to process (from the Event Grid webhook, or its own
scans) into a message on this queue, and one shared QueueListener runs the functions, with the
queue's retry semantics: a failed run makes the message visible again, and after MaxDequeueCount (5)
failures it is copied to `webjobs-blobtrigger-poison`. Followed here:
- Listeners/SharedBlobQueueListenerFactory.cs (a QueueListener over the host blob trigger queue whose
  poison queue is webjobs-blobtrigger-poison; BatchSize = min(32, maxDegreeOfParallelism / 2 + 1),
  NewBatchThreshold = maxDegreeOfParallelism - BatchSize);
- Listeners/BlobQueueTriggerExecutor.cs (an unknown function or a deleted blob completes the message
  without running anything; for LogsAndContainerScan functions a changed ETag does too; EventGrid
  functions run on the blob as it is now);
- Listeners/BlobTriggerQueueWriter.cs (enqueue, then wake the listener: SharedQueueWatcher.Notify);
all under sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src in Azure/azure-sdk-for-net.
Locally only EventGrid-source functions take this path; LogsAndContainerScan ones are still invoked
directly by their scanner (devhost/blobs.py).
"""
from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage

from devhost.bindingdata import fetch, trigger_argument
from devhost.clock import Clock
from devhost.config import QueueOptions
from devhost.index import FunctionSpec, Invoker
from devhost.queues import QueueListener
from shared.errors import NotFound
from shared.storage import AzureStorage

log = logging.getLogger("devhost")

BLOB_TRIGGER_QUEUE_PREFIX = "azure-webjobs-blobtrigger-"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
SHARED_LISTENER_ID = "SharedBlobQueueListener"
MAX_BATCH_SIZE = 32


def blob_queue_options(max_parallel: int, max_dequeue_count: int, message_encoding: str) -> QueueOptions:
    """SharedBlobQueueListenerFactory.BlobsOptionsToQueuesOptions; other options keep the queue defaults."""
    batch = min(MAX_BATCH_SIZE, max_parallel // 2 + 1)
    return QueueOptions(batch_size=batch, new_batch_threshold=max_parallel - batch,
                        max_dequeue_count=max_dequeue_count, visibility_timeout=0.0,
                        max_polling_interval=60.0, message_encoding=message_encoding)


@dataclass(frozen=True)
class Registration:
    """A blob-triggered function the shared listener can run (BlobQueueRegistration)."""

    spec: FunctionSpec
    storage: AzureStorage  # the account of the function's connection, where its blobs live
    pattern: re.Pattern[str]  # over the blob name, giving the path's {parameters}
    source: str  # EventGrid or LogsAndContainerScan


class _Direct(Invoker):
    """Calls the shared listener's executor as is: it is no function (no Executing/Executed lines)."""

    def __call__(self, spec: FunctionSpec, reason: str, arg: Any) -> Any:
        return spec.user_function(arg)


class SharedBlobQueueListener(QueueListener):
    """The QueueListener over the host blob trigger queue, executing messages as BlobQueueTriggerExecutor."""

    def __init__(self, hosts: AzureStorage, host_id: str, options: QueueOptions, invoker: Invoker,
                 clock: Clock) -> None:
        self._registrations: dict[str, Registration] = {}
        self._run_function = invoker
        self._hosts = hosts
        self._encoding = options.message_encoding
        spec = FunctionSpec(name=SHARED_LISTENER_ID, bindings=(), user_function=self._execute, wants_context=False,
                            trigger={"type": "queueTrigger", "name": "message",
                                     "queueName": f"{BLOB_TRIGGER_QUEUE_PREFIX}{host_id}"})
        super().__init__(spec, hosts, options, _Direct(Path()), clock)
        self.poison_queue = BLOB_POISON_QUEUE  # not <queue>-poison: the host's shared blob poison queue

    def register(self, registration: Registration) -> None:
        self._registrations[registration.spec.function_id] = registration

    def enqueue(self, message: Mapping[str, Any]) -> None:
        """BlobTriggerQueueWriter.EnqueueAsync: the message JSON, in the host's message encoding; then wake up."""
        text = json.dumps(dict(message))
        if self._encoding == "base64":
            text = base64.b64encode(text.encode()).decode("ascii")
        self._hosts.enqueue_raw(self.queue, text)
        self.notify()

    def _execute(self, msg: QueueMessage) -> None:
        """BlobQueueTriggerExecutor.ExecuteAsync; raising fails the message (retried, then poisoned)."""
        try:
            message = json.loads(msg.get_body())
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise ValueError("Invalid blob trigger message.")
        function_id = message.get("FunctionId")
        if function_id is None:
            raise ValueError("Invalid function ID.")
        container, name = str(message.get("ContainerName")), str(message.get("BlobName"))
        registration = self._registrations.get(str(function_id))
        if registration is None:
            log.warning("Blob '%s' will not be processed because function '%s' cannot be found. Message Id: '%s'",
                        name, function_id, msg.id)
            return
        try:
            blob = fetch(registration.storage, container, name, data=registration.spec.sdk_type is None)
        except NotFound:
            log.info("Blob '%s' will not be processed because the blob cannot be found. Message Id: '%s'",
                     name, msg.id)
            return
        if registration.source != "EventGrid" and message.get("ETag") != blob.etag:
            return  # a newer version exists: the scan that finds it runs the function
        match = registration.pattern.match(name)
        params = {k: v for k, v in match.groupdict().items() if v is not None} if match else {}
        self._run_function(registration.spec, f"New blob detected({registration.source}): {container}/{name}",
                           trigger_argument(blob, params, registration.spec.trigger, registration.spec.sdk_type))
