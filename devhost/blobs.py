"""Blob triggers served by container scanning: once per blob version (ETag receipts), poison after N."""
from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote

from azure.functions.blob import InputStream

from devhost.clock import Clock
from devhost.config import HOSTS_CONTAINER, DevHostError, resolve
from devhost.index import FunctionSpec, Invoker
from devhost.loop import PollingLoop
from shared.errors import NotFound, PipelineError
from shared.storage import AzureStorage, BlobInfo, encode_message

log = logging.getLogger("devhost")

BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
MAX_PARALLEL = 8


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


class BlobScanner(PollingLoop):
    """Scans one container for one function; receipts keyed by ETag make each version fire once."""

    def __init__(self, spec: FunctionSpec, storage: AzureStorage, hosts: AzureStorage, host_id: str, *,
                 poison_threshold: int, interval: float, invoker: Invoker, clock: Clock,
                 message_encoding: str) -> None:
        self.spec = spec
        path = resolve(str(spec.trigger["path"]), f"function {spec.name} path")
        self.container, self._prefix, self._pattern = compile_blob_path(path, f"function {spec.name}")
        self.source = str(spec.trigger.get("source") or "LogsAndContainerScan")
        self._storage, self._hosts, self._host_id = storage, hosts, host_id
        self._threshold, self._interval = poison_threshold, interval
        self._invoke, self._clock, self._encoding = invoker, clock, message_encoding
        self._receipts = f"blobreceipts/{host_id}/{spec.function_id}/"
        self._running: set[str] = set()
        # finished here: a scan that listed receipts before this one's was written must not rerun it
        self._finished: set[str] = set()
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._init_loop(f"blobs-{spec.name}")


    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception as exc:  # keep scanning: storage may come back
                log.warning("blob scan of %s (function %s) failed: %s", self.container, self.spec.name, exc)
            self._clock.wait(self._stop, self._interval)

    def receipt(self, blob: BlobInfo) -> str:
        """The receipt path of one blob version (the Functions host uses the same layout)."""
        return f"{self._receipts}{blob.etag.strip(chr(34))}/{blob.container}/{blob.name}"

    def scan(self) -> None:
        """Start an invocation for every matching blob version without a receipt."""
        done = {b.name for b in self._hosts.list(HOSTS_CONTAINER, self._receipts)}
        for blob in self._storage.list(self.container, self._prefix):
            match = self._pattern.match(blob.name)
            key = self.receipt(blob)
            if not match or key in done:
                continue
            with self._lock:
                if key in self._running or key in self._finished or len(self._running) >= MAX_PARALLEL \
                        or self._stop.is_set():
                    continue
                self._running.add(key)
            threading.Thread(target=self._process, args=(blob, key), daemon=True,
                             name=f"invoke-{self.spec.name}").start()

    def _process(self, info: BlobInfo, key: str) -> None:
        try:
            try:
                blob = self._storage.read(info.container, info.name)
            except NotFound:
                return  # deleted since the listing
            if blob.etag.strip('"') != info.etag.strip('"'):  # listings give ETags unquoted
                return  # overwritten since the listing: the next scan sees the new version
            stream = InputStream(
                data=blob.data, name=f"{info.container}/{info.name}", length=len(blob.data),
                uri=f"{self._storage.blob_endpoint.rstrip('/')}/{info.container}/{quote(info.name)}",
            )
            reason = f"New blob detected({self.source}): {info.container}/{info.name}"
            try:
                self._invoke(self.spec, reason, stream)
            except Exception:
                self._failed(info, key, blob.etag)
                return
            self._hosts.write_json(HOSTS_CONTAINER, key, {"status": "completed", "etag": blob.etag})
            with self._lock:
                self._finished.add(key)
        except PipelineError as exc:
            log.error("blob %s/%s (function %s): %s", info.container, info.name, self.spec.name, exc)
        finally:
            with self._lock:
                self._running.discard(key)

    def _failed(self, info: BlobInfo, key: str, etag: str) -> None:
        with self._lock:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        if failures < self._threshold:
            return  # retried on a later scan
        # the Functions host gives up on a blob version after poisonBlobThreshold (5) failures
        # and sends this message to webjobs-blobtrigger-poison
        message = {"Type": "BlobTrigger", "FunctionId": self.spec.function_id, "BlobType": "BlockBlob",
                   "ContainerName": info.container, "BlobName": info.name, "ETag": etag}
        if self._encoding == "base64":
            self._hosts.enqueue_raw(BLOB_POISON_QUEUE, encode_message(message))
        else:
            self._hosts.enqueue_raw(BLOB_POISON_QUEUE, json.dumps(message, sort_keys=True))
        self._hosts.write_json(HOSTS_CONTAINER, key, {"status": "poisoned", "etag": etag, "failures": failures})
        with self._lock:
            self._finished.add(key)
        log.error("Blob %s/%s (ETag=%s) failed %d times in function %s: message sent to queue '%s'; "
                  "this version will not be retried", info.container, info.name, etag, failures,
                  self.spec.name, BLOB_POISON_QUEUE)
