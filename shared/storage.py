"""The one storage interface (Storage) over blobs and queues, with ETag semantics, and its Azure gateway.

AzureStorage works against Azure Storage (connection string or identity-based) and Azurite alike;
shared.memory_storage.MemoryStorage is the in-memory fake, held to the same contract tests
(tests/contract). Vendor errors are translated here and only here: ResourceExistsError /
ResourceModifiedError / 412 / 409 -> Conflict, ResourceNotFoundError (a 404) and a stale pop receipt ->
NotFound, connection failures, 5xx and 429 -> StorageUnreachable.
"""
from __future__ import annotations

import base64
import builtins
import functools
import io
import json
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any, Protocol, TypeVar, cast, runtime_checkable
from urllib.parse import unquote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings
from azure.storage.queue import QueueServiceClient

from shared.errors import ConfigurationError, Conflict, NotFound, StorageUnreachable
from shared.outbox import message_text  # one JSON spelling for SDK-sent and output-binding messages
from shared.settings import DEV_STORAGE, STORAGE, Need, Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Blob:
    """Blob content with the ETag it was read at."""

    data: bytes
    etag: str


class BlobStream(io.RawIOBase):
    """One blob version read in ranges as a seekable binary file (pyarrow readers take it as is).

    Bounded memory: nothing is read until asked for, each read fetches only the range it needs.
    Pinned to the ETag it was opened at: if the blob is overwritten while it is being read, the next
    read raises Conflict instead of mixing two versions. Wrap it in io.BufferedReader for small reads.
    """

    def __init__(self, fetch_into: Callable[[int, memoryview], int], size: int, etag: str,
                 fetch: Callable[[int, int], bytes] | None = None) -> None:
        super().__init__()
        # (offset, view) -> the pinned version's bytes from offset written into view, their count (len(view) but
        # at the blob's end): straight into the reader's buffer, not through a bytes object of each range
        self._fetch_into = fetch_into
        # (offset, length) -> those bytes in the buffer the client library made of the answer (read_range)
        self._fetch = fetch
        self.size = size
        self.etag = etag
        self._pos = 0

    def reopen(self) -> BlobStream:
        """The same blob version from its start again (a reader that was closed, e.g. by a pyarrow reader)."""
        return BlobStream(self._fetch_into, self.size, self.etag, self._fetch)

    def read_range(self, offset: int, size: int) -> bytes | bytearray:
        """The pinned version's bytes [offset, offset + size) (fewer at the blob's end), whatever the position.

        For a reader that takes a range whole: over Azure the bytes are the client library's own buffer of the
        answer (a readinto copies them once more, into a buffer that was zeroed first). Raises Conflict when
        the blob changed or ended early."""
        length = max(0, min(size, self.size - offset))
        if self._fetch is not None:
            data: bytes | bytearray = self._fetch(offset, length) if length else b""
        else:
            data = bytearray(length)
            view, filled = memoryview(data), 0
            while filled < length:
                got = self._fetch_into(offset + filled, view[filled:])
                if not got:
                    break
                filled += got
            del data[filled:]
        if len(data) != length:
            raise Conflict(f"the blob ended at byte {offset + len(data)} of {self.size}: it changed while read")
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self.size - self._pos)
        if length <= 0:
            return 0
        got = self._fetch_into(self._pos, memoryview(buffer).cast("B")[:length])
        self._pos += got
        return got


@dataclass(frozen=True)
class BlobInfo:
    """A listed blob: enough to decide whether it changed."""

    container: str
    name: str
    etag: str
    size: int
    last_modified: datetime | None


@dataclass(frozen=True)
class QueuedMessage:
    """A received queue message; content is the raw text as stored (still encoded)."""

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int
    insertion_time: datetime | None
    expiration_time: datetime | None
    next_visible_on: datetime | None


@runtime_checkable
class Storage(Protocol):
    """What the app needs from storage: blobs with ETags, queues with visibility; Azure or in memory."""

    blob_endpoint: str
    queue_endpoint: str

    def read(self, container: str, path: str) -> Blob:
        """Read a blob and its ETag. Raises NotFound ("blob (container=..., path=...) not found")."""
        ...

    def read_json(self, container: str, path: str) -> tuple[Any, str]:
        """Read a JSON blob and its ETag. Raises NotFound."""
        ...

    def open_read(self, container: str, path: str) -> BlobStream:
        """Open the blob's current version for reading in ranges (a seekable file, pinned to its ETag).

        Raises NotFound when absent; its reads raise Conflict once the blob has been overwritten.
        """
        ...

    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str:
        """Write a blob (creating its container), returning the new ETag.

        With if_match only over that ETag, with create_only only if absent. Raises Conflict when the
        condition fails, including if_match on a missing blob (Azure answers 412 there).
        """
        ...

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None,
    ) -> str:
        """Write (or replace) a blob from chunks as they are made, returning the new ETag.

        The blob changes only once the chunks end (Azure: staged blocks, then one commit), so readers see
        the old blob or the whole new one; an exception from the iterable propagates and leaves the blob
        as it was. Memory holds a few blocks (those being staged), whatever the blob's size.
        """
        ...

    def write_json(
        self, container: str, path: str, obj: Any, *, if_match: str | None = None, create_only: bool = False,
    ) -> str:
        """Write a JSON blob (same conditions as write), returning the new ETag."""
        ...

    def create_json(self, container: str, path: str, obj: Any) -> bool:
        """Create a JSON blob only if absent; False when it already existed."""
        ...

    def update_json(
        self, container: str, path: str, change: Callable[[Any | None], T], *, attempts: int = 20,
    ) -> T:
        """Read-modify-write under an ETag: `change` gets the current value (None if absent) and returns the new.

        A change that returns the current value itself writes nothing. Retries on a lost race. Raises
        Conflict after `attempts`.
        """
        ...

    def exists(self, container: str, path: str) -> bool:
        """True if the blob exists."""
        ...

    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        """Blobs under a prefix in name order, ETags quoted as read returns them; empty if no container."""
        ...

    # below a method named `list`, mypy reads `list[...]` in annotations as that method: hence builtins.list

    def delete(self, container: str, path: str, *, if_match: str | None = None) -> bool:
        """Delete a blob, with if_match only at that ETag; True if deleted, False if it was absent.

        Raises Conflict when if_match fails, including if_match on a missing blob (Azure answers 412).
        """
        ...

    def copy(self, container: str, path: str, to_container: str, to_path: str, *, if_match: str | None = None) -> str:
        """Copy a blob within the account, server side (no bytes pass through this process); returns the copy's ETag.

        if_match: the source's ETag must still be this one (Conflict otherwise, as write's if_match).
        Raises NotFound when the source does not exist. The destination is created or overwritten; its
        container is created when missing.
        """
        ...

    def enqueue(self, queue: str, payload: Any, *, delay_seconds: int = 0) -> str:
        """Send a message encoded as queue triggers expect (base64 JSON), hidden for delay_seconds; returns its id."""
        ...

    def enqueue_raw(self, queue: str, text: str, *, delay_seconds: int = 0) -> str:
        """Send text exactly as given (poison queues keep the original body this way); returns its id."""
        ...

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: int) -> builtins.list[QueuedMessage]:
        """Receive up to max_messages visible messages, each hidden for visibility_timeout seconds.

        Each receive increments the message's dequeue_count and gives it a new pop receipt.
        """
        ...

    def delete_message(self, queue: str, message: QueuedMessage) -> None:
        """Delete a message we finished with. Raises NotFound if it is gone or its pop receipt is stale."""
        ...

    def release(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> None:
        """Make a message visible again after visibility_timeout seconds (a retry); its pop receipt goes stale.

        Raises NotFound if it is gone or its pop receipt is stale.
        """
        ...

    def renew(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> QueuedMessage:
        """Hide a received message for visibility_timeout seconds from now; returns it with its new pop receipt.

        Raises NotFound if it is gone or its pop receipt is stale.
        """
        ...

    def peek(self, queue: str, max_messages: int = 32) -> builtins.list[str]:
        """Raw texts of visible messages, without dequeuing them (tests, admin)."""
        ...

    def ping(self) -> None:
        """Raise StorageUnreachable unless both blob and queue endpoints answer."""
        ...


def encode_message(payload: Any) -> str:
    """Encode a payload the way queue triggers expect by default (base64 of UTF-8 JSON)."""
    text = payload if isinstance(payload, str) else message_text(payload)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def blob_label(container: str, path: str) -> str:
    """How errors name a blob, the same for every backend."""
    return f"blob (container={container}, path={path})"


def message_label(queue: str, message_id: str) -> str:
    """How errors name a queue message, the same for every backend."""
    return f"message (queue={queue}, id={message_id})"


def stale_receipt(what: str) -> NotFound:
    """The error for a pop receipt that no longer matches: the message was received or updated since."""
    return NotFound(f"{what} not found with this pop receipt: it was received, released or renewed since; "
                    "use the receipt the last receive or renew returned")


class JsonBlobs(ABC):
    """The JSON helpers of Storage, built only on read and write so every backend shares them."""

    @abstractmethod
    def read(self, container: str, path: str) -> Blob: ...

    @abstractmethod
    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str: ...

    def read_json(self, container: str, path: str) -> tuple[Any, str]:
        blob = self.read(container, path)
        return json.loads(blob.data), blob.etag

    def write_json(
        self, container: str, path: str, obj: Any, *, if_match: str | None = None, create_only: bool = False,
    ) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")
        return self.write(container, path, data, if_match=if_match, create_only=create_only,
                          content_type="application/json")

    def create_json(self, container: str, path: str, obj: Any) -> bool:
        try:
            self.write_json(container, path, obj, create_only=True)
            return True
        except Conflict:
            return False

    def update_json(
        self, container: str, path: str, change: Callable[[Any | None], T], *, attempts: int = 20,
    ) -> T:
        for _ in range(attempts):
            etag: str | None
            try:
                current, etag = self.read_json(container, path)
            except NotFound:
                current, etag = None, None
            new = change(current)
            if etag is not None and new is current:
                return new  # the change kept the value as it is: nothing to write
            try:
                # absent: create-only, so two creators cannot both win
                self.write_json(container, path, new, if_match=etag, create_only=etag is None)
                return new
            except Conflict:
                continue
        raise Conflict(f"{blob_label(container, path)} kept changing; gave up after {attempts} attempts")


def _redacted(text: str) -> str:
    # SAS connection strings put the token in the client's URL (and so in urllib3's messages):
    # drop every query string so no `sig=` reaches a log or an HTTP answer
    return re.sub(r"\?[^\s'\"<>()]*", "", text)


def _unreachable(endpoint: str, detail: str, *, hint: str = "transient, retry later") -> StorageUnreachable:
    # The answer says what happened; where (endpoint) and the driver's text go to the log only.
    return StorageUnreachable(f"storage is unreachable: {hint}",
                              internal=f"storage (endpoint={_redacted(endpoint)}) is unreachable: {_redacted(detail)}")


def _http_error(what: str, endpoint: str, exc: HttpResponseError) -> Exception | None:
    status = exc.status_code or 0
    if isinstance(exc, ResourceNotFoundError) and status in (0, 404):
        # only a 404: the SDK picks not-found by error code alone, and Copy Blob's CannotVerifyCopySource also
        # comes as 403 (the source is not readable with these credentials) or 5xx (the source failed to answer)
        return NotFound(f"{what} not found")
    if status == 412:
        return Conflict(f"{what} was changed by someone else (precondition failed)")
    if status == 409:
        return Conflict(f"{what} already exists or is being changed ({exc.reason})")
    if status == 400 and getattr(exc, "error_code", None) == "PopReceiptMismatch":  # set by the storage SDK
        # Azure documents 404 for a stale pop receipt on Delete/Update Message, Azurite answers
        # 400 PopReceiptMismatch: both mean "not yours any more"
        # https://learn.microsoft.com/rest/api/storageservices/delete-message2
        return stale_receipt(what)
    if status >= 500 or status == 429:
        # throttled or a server fault after the SDK's own retries: transient, let the host retry
        return _unreachable(endpoint, f"it answered {status} ({exc.reason}) after retries; transient, retry later")
    return None


@contextmanager
def _translated(what: str, endpoint: str) -> Iterator[None]:
    try:
        yield
    except (ResourceExistsError, ResourceModifiedError) as exc:
        raise Conflict(f"{what} was changed by someone else (ETag or existence condition failed)") from exc
    except HttpResponseError as exc:
        translated = _http_error(what, endpoint, exc)
        if translated is None:
            raise
        raise translated from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        # request never sent (refused, DNS) or no answer read (connection dropped, read timeout)
        raise _unreachable(
            endpoint, f"{type(exc).__name__}: {exc}", hint="no answer; locally, start Azurite (`make run` starts "
            "it) or check AzureWebJobsStorage; in Azure, retry later"
        ) from exc


def _raw_lister(client: Any) -> Callable[..., Any] | None:
    """The SDK's List Blobs call answering the raw XML, None when this SDK release lacks it.

    The public listing turns each blob into a model through the SDK's generic deserialiser (~0.3 ms of
    CPU a blob, 30 ms for 100: most of a model page). ContainerClient.list_blob_names skips it this way
    (azure-storage-blob 12.31); list() reads names, sizes, ETags and times from the same XML itself.
    """
    try:
        from azure.storage.blob._list_blobs_helper import IgnoreListBlobsDeserializer
        from azure.storage.blob._shared.response_handlers import return_raw_deserialized

        generated = client._build_generated_client()
        generated.container._deserialize = IgnoreListBlobsDeserializer()
        return functools.partial(generated.container.list_blob_flat_segment, cls=return_raw_deserialized)
    except (ImportError, AttributeError):
        return None


def _listed(container: str, root: Any) -> tuple[list[BlobInfo], str | None]:
    """One page of a raw List Blobs answer (https://learn.microsoft.com/rest/api/storageservices/list-blobs)."""
    out = []
    for blob in root.iterfind("Blobs/Blob"):
        name = blob.find("Name")
        text = name.text or ""
        props = blob.find("Properties")
        etag = props.findtext("Etag") or ""
        modified = props.findtext("Last-Modified")
        out.append(BlobInfo(
            container, unquote(text) if name.get("Encoded") == "true" else text,
            etag if etag.startswith('"') else f'"{etag}"', int(props.findtext("Content-Length") or 0),
            parsedate_to_datetime(modified) if modified else None))
    return out, root.findtext("NextMarker") or None


class _ViewWriter:
    """The file the SDK's downloader writes a range to: each chunk copied once, into the reader's buffer."""

    def __init__(self, view: memoryview) -> None:
        self.view, self.written = view, 0

    def write(self, data: bytes) -> int:
        end = self.written + len(data)
        if end > len(self.view):
            raise ValueError(f"the range came back longer than the {len(self.view)} bytes asked for")
        self.view[self.written: end] = data
        self.written = end
        return len(data)

    def seekable(self) -> bool:  # the downloader writes its chunks in order, from one connection
        return False


def _if_match(etag: str | None) -> dict[str, Any]:
    # the SDK's spelling of an If-Match header
    return {} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}


# Pieces a download answer is read in (the SDK's default: 256 KB), and the size above which the SDK's chunks()
# cuts an answer into copies (its max_chunk_get_size, default 4 MB): a ranged read of a big file (batch scoring's
# 8 MB) comes back as one piece, handed on as the SDK's own buffer. A 209 MB file cost the client ~0.23 CPU s in
# 256 KB pieces, ~0.13 in 4 MB ones cut in two, ~0.09 so. A small answer is one piece either way.
DATA_BLOCK_BYTES = 8 << 20
# Blocks write_chunks stages at once. One request at a time leaves the service waiting on its own writes between
# them: on Azurite 84 MB in 4 MB blocks took 0.41-0.50 s one at a time, 0.31-0.37 s two at a time, for the same
# CPU (the SDK's own uploads stage blocks side by side too: max_concurrency).
STAGED_AT_ONCE = 2
# How long copy() waits for a copy the service runs in the background (other-account sources; same-account
# copies finish within the call), polling its status every COPY_POLL_SECONDS, doubling up to COPY_POLL_MAX_SECONDS.
COPY_DEADLINE_SECONDS = 300.0
COPY_POLL_SECONDS = 0.2
COPY_POLL_MAX_SECONDS = 5.0


class AzureStorage(JsonBlobs):
    """Storage over Azure Blob + Queue storage (or Azurite)."""

    def __init__(self, blobs: BlobServiceClient, queues: QueueServiceClient) -> None:
        self._blobs = blobs
        self._queues = queues
        self._known_containers: set[str] = set()
        self._known_queues: set[str] = set()
        self._listers: dict[str, Callable[..., Any] | None] = {}  # container -> _raw_lister's call
        self.page_size: int | None = None  # blobs per List Blobs call (None: the service's 5000); tests page with less
        self._lock = threading.Lock()
        self.blob_endpoint = blobs.url
        self.queue_endpoint = queues.url

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureStorage:
        """Connection string locally; identity-based (DefaultAzureCredential) in Azure."""
        # The SDK's default back-off starts at 15 s; a Functions invocation should fail fast and
        # let the host's own retry (dequeue count, blob receipts) take over.
        retry: dict[str, Any] = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 2,
                 "connection_timeout": 5, "read_timeout": 30}
        blob_options = {**retry, "connection_data_block_size": DATA_BLOCK_BYTES, "max_chunk_get_size": DATA_BLOCK_BYTES}
        settings.require(Need.STORAGE)  # 503 CONFIGURATION naming AzureWebJobsStorage
        if settings.storage_connection_string:
            conn = settings.storage_connection_string
            try:
                return cls(
                    BlobServiceClient.from_connection_string(conn, **blob_options),
                    QueueServiceClient.from_connection_string(conn, **retry),
                )
            except ValueError as exc:  # the SDK's words for a malformed string; the string itself stays out
                problem = str(exc).rstrip(".")
                raise ConfigurationError(f"{STORAGE} is invalid: {problem}; use a storage connection string "
                                         f"({DEV_STORAGE} for Azurite)") from None
        blob_uri = settings.storage_blob_uri
        queue_uri = settings.storage_queue_uri
        if settings.storage_account_name:
            blob_uri = blob_uri or f"https://{settings.storage_account_name}.blob.core.windows.net"
            queue_uri = queue_uri or f"https://{settings.storage_account_name}.queue.core.windows.net"
        assert blob_uri and queue_uri  # require(Need.STORAGE) has checked one of them is configured
        from azure.identity import DefaultAzureCredential  # only needed in Azure

        credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
        return cls(
            BlobServiceClient(blob_uri, credential=credential, **blob_options),
            QueueServiceClient(queue_uri, credential=credential, **retry),
        )

    # -- blobs -------------------------------------------------------------------------------

    def _container(self, name: str, create: bool) -> Any:
        client = self._blobs.get_container_client(name)
        if create and name not in self._known_containers:
            with _translated(f"container (name={name})", self.blob_endpoint):
                try:
                    client.create_container()
                except ResourceExistsError:
                    pass
            with self._lock:
                self._known_containers.add(name)
        return client

    def read(self, container: str, path: str) -> Blob:
        blob = self._blobs.get_blob_client(container, path)
        with _translated(blob_label(container, path), self.blob_endpoint):
            downloader = blob.download_blob()
            data = downloader.readall()
        return Blob(data=data, etag=downloader.properties.etag)

    def open_read(self, container: str, path: str) -> BlobStream:
        blob = self._blobs.get_blob_client(container, path)
        label = blob_label(container, path)
        with _translated(label, self.blob_endpoint):
            props = blob.get_blob_properties()
        etag = str(props.etag)

        def fetch_into(offset: int, view: memoryview) -> int:
            into = _ViewWriter(view)
            with _translated(label, self.blob_endpoint):  # a newer version fails If-Match: Conflict
                # readinto only calls write (and seekable): the view writer is file enough
                blob.download_blob(offset=offset, length=len(view), **_if_match(etag)).readinto(cast(IO[bytes], into))
            return into.written

        def fetch(offset: int, length: int) -> bytes:
            with _translated(label, self.blob_endpoint):
                # one request (a range under the SDK's max_single_get_size): its chunks are the one buffer it made
                return b"".join(blob.download_blob(offset=offset, length=length, **_if_match(etag)).chunks())

        return BlobStream(fetch_into, int(props.size or 0), etag, fetch)

    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str:
        self._container(container, create=True)
        blob = self._blobs.get_blob_client(container, path)
        kwargs: dict[str, Any] = {"overwrite": not create_only, **_if_match(if_match)}
        if content_type:
            kwargs["content_settings"] = ContentSettings(content_type=content_type)
        with _translated(blob_label(container, path), self.blob_endpoint):
            result = blob.upload_blob(data, **kwargs)
        return str(result["etag"])

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None,
    ) -> str:
        self._container(container, create=True)
        blob = self._blobs.get_blob_client(container, path)
        settings = ContentSettings(content_type=content_type) if content_type else None
        # Each chunk is staged as one block as it comes, then one commit. (The SDK's upload of an iterable cuts the
        # chunks again into max_block_size pieces through a file-like wrapper that copies every byte two or three
        # times: ~0.1 CPU s for the 84 MB of a million-row results file.) A block id names this upload and the
        # block's place; every id of a blob has the same length, as the service requires.
        upload = uuid.uuid4().hex
        blocks: list[BlobBlock] = []
        staging: deque[Future[Any]] = deque()
        with _translated(blob_label(container, path), self.blob_endpoint), \
                ThreadPoolExecutor(STAGED_AT_ONCE, thread_name_prefix="stage-block") as pool:
            try:
                for chunk in chunks:
                    if chunk:
                        block_id = base64.b64encode(f"{upload}-{len(blocks):08d}".encode()).decode()
                        staging.append(pool.submit(blob.stage_block, block_id, chunk))
                        blocks.append(BlobBlock(block_id))
                        if len(staging) >= STAGED_AT_ONCE:  # memory holds the blocks in flight, no more
                            staging.popleft().result()
                while staging:
                    staging.popleft().result()
            finally:
                for future in staging:  # the chunks or a block failed: no more requests for this upload
                    future.cancel()
            result = blob.commit_block_list(blocks, content_settings=settings)
        return str(result["etag"])

    def exists(self, container: str, path: str) -> bool:
        blob = self._blobs.get_blob_client(container, path)
        with _translated(blob_label(container, path), self.blob_endpoint):
            return bool(blob.exists())

    def list(self, container: str, prefix: str = "", *, uncommitted: bool = False) -> list[BlobInfo]:
        """As Storage.list; with uncommitted, also the blobs being uploaded: a new block blob with staged blocks
        and no commit yet is listed with no bytes and cannot be read (devhost's local Event Grid watches them)."""
        client = self._container(container, create=False)
        if container not in self._listers:
            self._listers[container] = _raw_lister(client)
        lister = self._listers[container]
        include = ["uncommittedblobs"] if uncommitted else None
        out: list[BlobInfo] = []
        with _translated(f"container (name={container})", self.blob_endpoint):
            try:
                marker: str | None = None
                while lister is not None:
                    _, root = lister(prefix=prefix or None, marker=marker, maxresults=self.page_size, include=include)
                    page, marker = _listed(container, root)
                    out.extend(page)
                    if marker is None:
                        return out
                for props in client.list_blobs(name_starts_with=prefix or None, include=include,
                                               results_per_page=self.page_size):
                    # listings give ETags unquoted, reads and writes quoted: one form, usable as if_match
                    etag = props.etag if props.etag.startswith('"') else f'"{props.etag}"'
                    out.append(BlobInfo(container, props.name, etag, props.size or 0, props.last_modified))
            except ResourceNotFoundError:
                return []
        return out

    def delete(self, container: str, path: str, *, if_match: str | None = None) -> bool:
        blob = self._blobs.get_blob_client(container, path)
        with _translated(blob_label(container, path), self.blob_endpoint):
            try:
                blob.delete_blob(**_if_match(if_match))
            except ResourceNotFoundError:  # blob or container absent; with if_match Azure answers 412
                return False
        return True

    def copy(self, container: str, path: str, to_container: str, to_path: str, *, if_match: str | None = None) -> str:
        # Copy Blob: the service reads the source itself. Same-account, it authorizes that read with the
        # caller's own credentials: the shared key, the SAS in the source URL, or with identity-based
        # access the same identity (which then needs read on the source container as well as write on the
        # destination's). A stale source ETag: 412 (SourceConditionNotMet; Azurite ConditionNotMet) ->
        # Conflict; a missing source: 404 (CannotVerifyCopySource; Azurite BlobNotFound) -> NotFound.
        self._container(to_container, create=True)
        source = self._blobs.get_blob_client(container, path)
        target = self._blobs.get_blob_client(to_container, to_path)
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs = {"source_etag": if_match, "source_match_condition": MatchConditions.IfNotModified}
        label = blob_label(container, path)
        with _translated(label, self.blob_endpoint):
            result = target.start_copy_from_url(source.url, **kwargs)
        if result.get("copy_status") == "success":  # same-account copies (Azurite's always) end within the call
            return str(result["etag"])
        return self._await_copy(target, str(result.get("copy_id")), f"{label} copied to "
                                f"{blob_label(to_container, to_path)}")

    def _await_copy(self, target: Any, copy_id: str, what: str) -> str:
        """Poll a pending copy until it ends: the destination's ETag; StorageUnreachable when it fails or times out."""
        deadline = time.monotonic() + COPY_DEADLINE_SECONDS
        pause = COPY_POLL_SECONDS
        while True:
            with _translated(what, self.blob_endpoint):
                props = target.get_blob_properties()
            copied = props.copy
            if copied.id != copy_id:  # another copy or write replaced ours on the destination
                raise Conflict(f"{what} was changed by someone else while the copy ran")
            if copied.status == "success":
                return str(props.etag)
            if copied.status != "pending":  # failed or aborted
                raise StorageUnreachable(f"{what} ended {copied.status}; transient, retry the copy",
                                         internal=_redacted(str(copied.status_description)))
            if time.monotonic() > deadline:
                try:  # a copy still running would make the retry's copy fail (409 PendingCopyOperation)
                    target.abort_copy(copy_id)
                except (HttpResponseError, ServiceRequestError, ServiceResponseError):
                    pass  # it ended meanwhile, or the abort failed: the retry will tell
                raise StorageUnreachable(f"{what} did not finish within {COPY_DEADLINE_SECONDS:.0f}s; "
                                         "transient, retry the copy")
            time.sleep(pause)  # polling the copy's status with a deadline
            pause = min(pause * 2, COPY_POLL_MAX_SECONDS)

    # -- queues ------------------------------------------------------------------------------

    def _queue(self, name: str) -> Any:
        client = self._queues.get_queue_client(name)
        if name not in self._known_queues:
            with _translated(f"queue (name={name})", self.queue_endpoint):
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
            with self._lock:
                self._known_queues.add(name)
        return client

    def enqueue(self, queue: str, payload: Any, *, delay_seconds: int = 0) -> str:
        return self.enqueue_raw(queue, encode_message(payload), delay_seconds=delay_seconds)

    def enqueue_raw(self, queue: str, text: str, *, delay_seconds: int = 0) -> str:
        client = self._queue(queue)
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            sent = client.send_message(text, visibility_timeout=delay_seconds or None)
        return str(sent.id)

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: int) -> builtins.list[QueuedMessage]:
        client = self._queue(queue)
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            # messages_per_page too: with max_messages alone the SDK fetches one message per call;
            # an empty queue yields no page at all (StopIteration), hence next(..., [])
            pages = client.receive_messages(
                messages_per_page=max_messages, max_messages=max_messages, visibility_timeout=visibility_timeout
            ).by_page()
            batch = builtins.list(next(pages, []))
            return [
                QueuedMessage(
                    id=m.id, pop_receipt=m.pop_receipt, content=m.content or "",
                    dequeue_count=m.dequeue_count or 0, insertion_time=m.inserted_on,
                    expiration_time=m.expires_on, next_visible_on=m.next_visible_on,
                )
                for m in batch
            ]

    def delete_message(self, queue: str, message: QueuedMessage) -> None:
        with _translated(message_label(queue, message.id), self.queue_endpoint):
            self._queue(queue).delete_message(message.id, message.pop_receipt)

    def release(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> None:
        self.renew(queue, message, visibility_timeout=visibility_timeout)

    def renew(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> QueuedMessage:
        with _translated(message_label(queue, message.id), self.queue_endpoint):
            updated = self._queue(queue).update_message(
                message.id, message.pop_receipt, visibility_timeout=visibility_timeout
            )
        return replace(message, pop_receipt=updated.pop_receipt, next_visible_on=updated.next_visible_on)

    def peek(self, queue: str, max_messages: int = 32) -> builtins.list[str]:
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            return [m.content for m in self._queue(queue).peek_messages(max_messages=max_messages)]

    def ping(self) -> None:
        with _translated("blob service", self.blob_endpoint):
            self._blobs.get_service_properties()
        with _translated("queue service", self.queue_endpoint):
            self._queues.get_service_properties()


_gateway: AzureStorage | None = None
_gateway_lock = threading.Lock()


def reset_process_state() -> None:
    """Forget the process-wide gateway and settings: the next use builds them from the environment.

    For a host that restarts the app inside one process (devhost, tests), as a new worker would.
    """
    global _gateway
    from shared.settings import get_settings

    with _gateway_lock:
        _gateway = None
    get_settings.cache_clear()


def get_storage() -> AzureStorage:
    """The process-wide gateway (clients are thread-safe and keep connections alive)."""
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            from shared.settings import get_settings

            _gateway = AzureStorage.from_settings(get_settings())
        return _gateway
