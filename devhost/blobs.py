"""Blob triggers: container scans, once per blob version (ETag receipts).

- LogsAndContainerScan source (BlobScanner): each new version is read (data and properties in one
  download) and the function invoked directly; 5 failures (poisonBlobThreshold) send the host's
  blob trigger message to webjobs-blobtrigger-poison; up to maxDegreeOfParallelism versions at once.
- EventGrid source (EventGridSource): the scan stands in for Event Grid. Each new version becomes the
  Microsoft.Storage.BlobCreated event Azure Storage would publish, POSTed to the blobs extension's
  webhook on the local HTTP server; from there it takes the host's path (blob trigger queue, retries,
  poison: devhost/eventgrid.py, devhost/blobqueue.py). The receipt records that the event was delivered.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime

from devhost.bindingdata import blob_uri, fetch, properties, trigger_argument
from devhost.blobqueue import BLOB_POISON_QUEUE
from devhost.clock import Clock
from devhost.config import HOSTS_CONTAINER, DevHostError, resolve
from devhost.eventgrid import CreatedBlob, EventGridPublisher, account_name, blob_created_event
from devhost.index import FunctionSpec, Invoker
from devhost.loop import PollingLoop
from shared.errors import NotFound, PipelineError
from shared.storage import AzureStorage, BlobInfo, encode_message

log = logging.getLogger("devhost")

__all__ = ["BLOB_POISON_QUEUE", "BLOB_SCAN_INTERVAL", "BlobScanner", "EventGridSource", "compile_blob_path"]

# seconds between scans of a watched container. A scan of an idle container is one listing (receipts are cached),
# so scans every 0.25 s cost an idle host what scans every 0.5 s cost when each also listed the receipts, and the
# local Event Grid hands a dropped blob on 0.125 s after it is written on average
BLOB_SCAN_INTERVAL = 0.25
# seconds between scans while a new blob of the container is being uploaded (its blocks staged, no commit yet), so
# that a big file's event follows its commit by ~0.025 s on average instead of 0.125 s; only for
# UPLOAD_WATCH_SECONDS after the upload is first seen (an upload its client abandoned is listed for days)
UPLOAD_SCAN_INTERVAL = 0.05
UPLOAD_WATCH_SECONDS = 300.0


def compile_blob_path(path: str, where: str) -> tuple[str, str, re.Pattern[str]]:
    """(container, listing prefix, pattern over the blob name) of a path like datasets/{model}/{name}."""
    container, _, rest = path.partition("/")
    if not container or "{" in container:
        raise DevHostError(f"{where}: blob path {path!r} must start with a fixed container name")
    parts, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", rest):
        parts.append(re.escape(rest[pos:m.start()]) + f"(?P<{m.group(1)}>.+?)")
        pos = m.end()
    parts.append(re.escape(rest[pos:]))
    prefix = rest.split("{", 1)[0]
    return container, prefix, re.compile("^" + "".join(parts) + "$")


def _params(match: re.Match[str]) -> dict[str, str]:
    return {k: v for k, v in match.groupdict().items() if v is not None}


class _ContainerScan(PollingLoop):
    """Lists one container for one function and hands each matching version without a receipt on."""

    def __init__(self, spec: FunctionSpec, storage: AzureStorage, hosts: AzureStorage, host_id: str, *,
                 interval: float, clock: Clock) -> None:
        self.spec = spec
        path = resolve(str(spec.trigger["path"]), f"function {spec.name} path")
        self.container, self._prefix, self.pattern = compile_blob_path(path, f"function {spec.name}")
        self.source = str(spec.trigger.get("source") or "LogsAndContainerScan")
        self._storage, self._hosts, self._host_id = storage, hosts, host_id
        self._interval, self._clock = interval, clock
        self._receipts = f"blobreceipts/{host_id}/{spec.function_id}/"
        self._lock = threading.Lock()
        # receipts known to exist: a cache of the receipts folder (they are only ever added), so that a scan lists
        # the container alone until it shows a version without a known receipt
        self._receipted: set[str] = set()
        # new blobs being uploaded, by name: the ETag they were listed with and when that was first seen
        self._uploads: dict[str, tuple[str, datetime]] = {}
        self._init_loop(f"blobs-{spec.name}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception as exc:  # keep scanning: storage may come back
                log.warning("blob scan of %s (function %s) failed: %s", self.container, self.spec.name, exc)
            self._clock.wait(self._stop, self.next_interval())

    def next_interval(self) -> float:
        """Seconds until the next scan: UPLOAD_SCAN_INTERVAL while the last scan saw a new blob being uploaded
        (for UPLOAD_WATCH_SECONDS from when it was first seen), else the scan interval."""
        now = self._clock.now()
        watched = any((now - seen).total_seconds() < UPLOAD_WATCH_SECONDS for _, seen in self._uploads.values())
        return min(self._interval, UPLOAD_SCAN_INTERVAL) if watched else self._interval

    def receipt(self, blob: BlobInfo) -> str:
        """The receipt path of one blob version (the Functions host uses the same layout)."""
        return f"{self._receipts}{blob.etag.strip(chr(34))}/{blob.container}/{blob.name}"

    def scan(self) -> None:
        """Hand on every matching blob version without a receipt.

        One listing of the container; the receipts are listed again only when it shows a version without a known
        receipt (another instance, or an earlier run of this one, may have written it). A scan's cost so grows
        with the container, not with every version ever handled. A deleted receipt makes the version go out again
        only after a restart (the cache still holds it). A new blob still being uploaded is listed too (with no
        bytes, not yet readable): it is watched, not handed on, and scans come faster until it is committed."""
        new, uploads = [], {}
        for blob in self._storage.list(self.container, self._prefix, uncommitted=True):
            if not (match := self.pattern.match(blob.name)) or (key := self.receipt(blob)) in self._receipted:
                continue
            if blob.size == 0 and (seen := self._uploading(blob)) is not None:
                uploads[blob.name] = seen
                continue
            new.append((blob, key, match))
        self._uploads = uploads
        if not new:
            return
        listed = {b.name for b in self._hosts.list(HOSTS_CONTAINER, self._receipts)}
        with self._lock:
            self._receipted |= listed
        for blob, key, match in new:
            if key not in listed and not self._stop.is_set():
                self._new_version(blob, key, _params(match))

    def _uploading(self, blob: BlobInfo) -> tuple[str, datetime] | None:
        """(ETag, first seen) of a listed blob with no bytes that cannot be read: an upload not committed yet (Get
        Blob Properties answers 404 until Put Block List); None for a blob that can be read (an empty one)."""
        if self._storage.exists(blob.container, blob.name):
            return None
        seen = self._uploads.get(blob.name)
        return seen if seen is not None and seen[0] == blob.etag else (blob.etag, self._clock.now())

    def _write_receipt(self, key: str, receipt: dict[str, str | int]) -> None:
        self._hosts.write_json(HOSTS_CONTAINER, key, receipt)
        with self._lock:
            self._receipted.add(key)

    def _new_version(self, blob: BlobInfo, key: str, params: dict[str, str]) -> None:
        raise NotImplementedError


class BlobScanner(_ContainerScan):
    """LogsAndContainerScan: invokes the function for each new version; receipts keyed by ETag, poison after N."""

    def __init__(self, spec: FunctionSpec, storage: AzureStorage, hosts: AzureStorage, host_id: str, *,
                 poison_threshold: int, interval: float, invoker: Invoker, clock: Clock,
                 message_encoding: str, max_parallel: int) -> None:
        super().__init__(spec, storage, hosts, host_id, interval=interval, clock=clock)
        self._threshold, self._invoke, self._encoding = poison_threshold, invoker, message_encoding
        self.max_parallel = max_parallel  # host.json extensions.blobs.maxDegreeOfParallelism
        self._running: set[str] = set()
        self._failures: dict[str, int] = {}

    def _new_version(self, blob: BlobInfo, key: str, params: dict[str, str]) -> None:
        with self._lock:
            # receipted: a scan that listed receipts before this one's was written must not rerun it
            if key in self._running or key in self._receipted or len(self._running) >= self.max_parallel:
                return
            self._running.add(key)
        threading.Thread(target=self._process, args=(blob, key, params), daemon=True,
                         name=f"invoke-{self.spec.name}").start()

    def _process(self, info: BlobInfo, key: str, params: dict[str, str]) -> None:
        try:
            try:
                blob = fetch(self._storage, info.container, info.name, data=self.spec.sdk_type is None)
            except NotFound:
                return  # deleted since the listing
            if blob.etag.strip('"') != info.etag.strip('"'):  # listings give ETags unquoted
                return  # overwritten since the listing: the next scan sees the new version
            reason = f"New blob detected({self.source}): {info.container}/{info.name}"
            try:
                self._invoke(self.spec, reason, trigger_argument(blob, params, self.spec.trigger, self.spec.sdk_type))
            except Exception:
                self._failed(info, key, blob.etag)
                return
            self._write_receipt(key, {"status": "completed", "etag": blob.etag})
        except PipelineError as exc:
            log.error("blob %s/%s (function %s): %s", info.container, info.name, self.spec.name, exc)
        except Exception as exc:  # the SDK's own errors from the download: the next scan retries
            log.error("blob %s/%s (function %s): could not read it: %s", info.container, info.name,
                      self.spec.name, exc)
        finally:
            with self._lock:
                self._running.discard(key)

    def _failed(self, info: BlobInfo, key: str, etag: str) -> None:
        with self._lock:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        if failures < self._threshold:
            return  # retried on a later scan
        # the Functions host gives up on a blob version after poisonBlobThreshold (5) failures
        # and sends its blob trigger message to webjobs-blobtrigger-poison
        message = {"Type": "BlobTrigger", "FunctionId": self.spec.function_id, "BlobType": "BlockBlob",
                   "ContainerName": info.container, "BlobName": info.name, "ETag": etag}
        if self._encoding == "base64":
            self._hosts.enqueue_raw(BLOB_POISON_QUEUE, encode_message(json.dumps(message)))
        else:
            self._hosts.enqueue_raw(BLOB_POISON_QUEUE, json.dumps(message))
        self._write_receipt(key, {"status": "poisoned", "etag": etag, "failures": failures})
        log.error("Blob %s/%s (ETag=%s) failed %d times in function %s: message sent to queue '%s'; "
                  "this version will not be retried", info.container, info.name, etag, failures,
                  self.spec.name, BLOB_POISON_QUEUE)


class EventGridSource(_ContainerScan):
    """EventGrid source: publishes a BlobCreated event per new version to the blobs webhook (once per ETag)."""

    def __init__(self, spec: FunctionSpec, storage: AzureStorage, hosts: AzureStorage, host_id: str, *,
                 interval: float, clock: Clock, publisher: EventGridPublisher) -> None:
        super().__init__(spec, storage, hosts, host_id, interval=interval, clock=clock)
        self._publisher = publisher
        self._account = account_name(storage.blob_endpoint)

    def _new_version(self, blob: BlobInfo, key: str, params: dict[str, str]) -> None:
        props = properties(self._storage, blob.container, blob.name)
        if props is None or str(props.etag).strip('"') != blob.etag.strip('"'):
            return  # deleted or overwritten since the listing: the next scan publishes the new version
        created = CreatedBlob(
            container=blob.container, name=blob.name, etag=str(props.etag),
            content_type=props.content_settings.content_type, content_length=int(props.size or 0),
            url=blob_uri(self._storage, blob.container, blob.name), last_modified=props.last_modified,
        )
        event = blob_created_event(created, account=self._account, now=self._clock.now())
        status = self._publisher.publish(self.spec.function_id, [event])
        if status // 100 != 2:
            log.warning("Event Grid (local): the blobs webhook answered %s for %s/%s (function %s); "
                        "retrying on the next scan", status, blob.container, blob.name, self.spec.name)
            return
        self._write_receipt(key, {"status": "published", "etag": str(props.etag), "event": event["id"]})

