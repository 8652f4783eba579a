"""The one storage gateway over blobs and queues, with ETag semantics, used by everything.

Works against Azure Storage (connection string or identity-based) and Azurite alike. Vendor
errors are translated here and only here: ResourceExistsError / ResourceModifiedError ->
Conflict, ResourceNotFoundError -> NotFound, connection failures -> StorageUnreachable.
"""
from __future__ import annotations

import base64
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterator, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings
from azure.storage.queue import QueueServiceClient

from shared.errors import Conflict, NotFound, StorageUnreachable
from shared.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Blob:
    """Blob content with the ETag it was read at."""

    data: bytes
    etag: str


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


class Storage(Protocol):
    """What the app needs from storage; one Azure implementation serves Azure and Azurite."""

    def read(self, container: str, path: str) -> Blob: ...
    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str: ...
    def list(self, container: str, prefix: str = "") -> list[BlobInfo]: ...
    def enqueue(self, queue: str, payload: Any, *, delay_seconds: int = 0) -> str: ...


def encode_message(payload: Any) -> str:
    """Encode a payload the way queue triggers expect by default (base64 of UTF-8 JSON)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@contextmanager
def _translated(what: str, endpoint: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFound(f"{what} not found") from exc
    except (ResourceExistsError, ResourceModifiedError) as exc:
        raise Conflict(f"{what} was changed by someone else (ETag or existence condition failed)") from exc
    except HttpResponseError as exc:
        if exc.status_code == 412:
            raise Conflict(f"{what} was changed by someone else (precondition failed)") from exc
        if exc.status_code == 409:
            raise Conflict(f"{what} already exists or is being changed ({exc.reason})") from exc
        raise
    except ServiceRequestError as exc:
        raise StorageUnreachable(
            f"storage (endpoint={endpoint}) is unreachable: {exc}. Locally, start Azurite "
            "(`make azurite` or `npx azurite --location .azurite`) or check AzureWebJobsStorage."
        ) from exc


class AzureStorage:
    """The gateway over Azure Blob + Queue storage (or Azurite)."""

    def __init__(self, blobs: BlobServiceClient, queues: QueueServiceClient) -> None:
        self._blobs = blobs
        self._queues = queues
        self._known_containers: set[str] = set()
        self._known_queues: set[str] = set()
        self._lock = threading.Lock()
        self.blob_endpoint = blobs.url
        self.queue_endpoint = queues.url

    @classmethod
    def from_settings(cls, settings: Settings) -> "AzureStorage":
        """Connection string locally; identity-based (DefaultAzureCredential) in Azure."""
        # The SDK's default back-off starts at 15 s; a Functions invocation should fail fast and
        # let the host's own retry (dequeue count, blob receipts) take over.
        retry = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 2,
                 "connection_timeout": 5, "read_timeout": 30}
        if settings.storage_connection_string:
            conn = settings.storage_connection_string
            return cls(
                BlobServiceClient.from_connection_string(conn, **retry),
                QueueServiceClient.from_connection_string(conn, **retry),
            )
        blob_uri = settings.storage_blob_uri
        queue_uri = settings.storage_queue_uri
        if settings.storage_account_name:
            blob_uri = blob_uri or f"https://{settings.storage_account_name}.blob.core.windows.net"
            queue_uri = queue_uri or f"https://{settings.storage_account_name}.queue.core.windows.net"
        if not (blob_uri and queue_uri):
            raise StorageUnreachable(
                "no storage configured: set AzureWebJobsStorage (a connection string, "
                "e.g. UseDevelopmentStorage=true for Azurite) or AzureWebJobsStorage__accountName"
            )
        from azure.identity import DefaultAzureCredential  # only needed in Azure

        credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
        return cls(
            BlobServiceClient(blob_uri, credential=credential, **retry),
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
        """Read a blob and its ETag. Raises NotFound."""
        blob = self._blobs.get_blob_client(container, path)
        with _translated(f"blob (container={container}, path={path})", self.blob_endpoint):
            downloader = blob.download_blob()
            data = downloader.readall()
        return Blob(data=data, etag=downloader.properties.etag)

    def read_json(self, container: str, path: str) -> tuple[Any, str]:
        """Read a JSON blob and its ETag. Raises NotFound."""
        blob = self.read(container, path)
        return json.loads(blob.data), blob.etag

    def write(
        self, container: str, path: str, data: bytes, *, if_match: str | None = None,
        create_only: bool = False, content_type: str | None = None,
    ) -> str:
        """Write a blob; with if_match only over that ETag, with create_only only if absent.

        Raises Conflict when the condition fails.
        """
        self._container(container, create=True)
        blob = self._blobs.get_blob_client(container, path)
        kwargs: dict[str, Any] = {"overwrite": not create_only}
        if if_match is not None:
            kwargs.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        if content_type:
            kwargs["content_settings"] = ContentSettings(content_type=content_type)
        with _translated(f"blob (container={container}, path={path})", self.blob_endpoint):
            result = blob.upload_blob(data, **kwargs)
        return str(result["etag"])

    def write_json(self, container: str, path: str, obj: Any, **kwargs: Any) -> str:
        """Write a JSON blob (same conditions as write)."""
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")
        return self.write(container, path, data, content_type="application/json", **kwargs)

    def create_json(self, container: str, path: str, obj: Any) -> bool:
        """Create a JSON blob only if absent; False when it already existed."""
        try:
            self.write_json(container, path, obj, create_only=True)
            return True
        except Conflict:
            return False

    def update_json(
        self, container: str, path: str, change: Callable[[Any | None], T], *, attempts: int = 20,
    ) -> T:
        """Read-modify-write under an ETag; `change` gets the current value (None if absent)
        and returns the new one. Retries on a lost race. Raises Conflict after `attempts`."""
        for _ in range(attempts):
            try:
                current, etag = self.read_json(container, path)
            except NotFound:
                current, etag = None, None
            new = change(current)
            try:
                if etag is None:
                    self.write_json(container, path, new, create_only=True)
                else:
                    self.write_json(container, path, new, if_match=etag)
                return new
            except Conflict:
                continue
        raise Conflict(f"blob (container={container}, path={path}) kept changing; gave up after {attempts} attempts")

    def exists(self, container: str, path: str) -> bool:
        """True if the blob exists."""
        blob = self._blobs.get_blob_client(container, path)
        with _translated(f"blob (container={container}, path={path})", self.blob_endpoint):
            return bool(blob.exists())

    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        """Blobs under a prefix (empty when the container does not exist)."""
        client = self._container(container, create=False)
        out: list[BlobInfo] = []
        with _translated(f"container (name={container})", self.blob_endpoint):
            try:
                for props in client.list_blobs(name_starts_with=prefix or None):
                    out.append(BlobInfo(container, props.name, props.etag, props.size or 0, props.last_modified))
            except ResourceNotFoundError:
                return []
        return out

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
        """Send a message encoded as queue triggers expect (base64 JSON); returns its id."""
        return self.enqueue_raw(queue, encode_message(payload), delay_seconds=delay_seconds)

    def enqueue_raw(self, queue: str, text: str, *, delay_seconds: int = 0) -> str:
        """Send text exactly as given (poison queues keep the original body this way)."""
        client = self._queue(queue)
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            sent = client.send_message(text, visibility_timeout=delay_seconds or None)
        return str(sent.id)

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: int) -> list[QueuedMessage]:
        """Receive up to max_messages, hidden for visibility_timeout seconds."""
        client = self._queue(queue)
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            # messages_per_page too: with max_messages alone the SDK fetches one message per call;
            # an empty queue yields no page at all (StopIteration), hence next(..., [])
            pages = client.receive_messages(
                messages_per_page=max_messages, max_messages=max_messages, visibility_timeout=visibility_timeout
            ).by_page()
            batch = list(next(pages, []))
            return [
                QueuedMessage(
                    id=m.id, pop_receipt=m.pop_receipt, content=m.content or "",
                    dequeue_count=m.dequeue_count or 0, insertion_time=m.inserted_on,
                    expiration_time=m.expires_on, next_visible_on=m.next_visible_on,
                )
                for m in batch
            ]

    def delete_message(self, queue: str, message: QueuedMessage) -> None:
        """Delete a message we finished with."""
        with _translated(f"message (queue={queue}, id={message.id})", self.queue_endpoint):
            self._queue(queue).delete_message(message.id, message.pop_receipt)

    def release(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> None:
        """Make a message visible again after visibility_timeout seconds (a retry)."""
        with _translated(f"message (queue={queue}, id={message.id})", self.queue_endpoint):
            self._queue(queue).update_message(
                message.id, message.pop_receipt, visibility_timeout=visibility_timeout
            )

    def renew(self, queue: str, message: QueuedMessage, *, visibility_timeout: int) -> QueuedMessage:
        """Extend a received message's invisibility; returns it with its new pop receipt."""
        with _translated(f"message (queue={queue}, id={message.id})", self.queue_endpoint):
            updated = self._queue(queue).update_message(
                message.id, message.pop_receipt, visibility_timeout=visibility_timeout
            )
        return replace(message, pop_receipt=updated.pop_receipt, next_visible_on=updated.next_visible_on)

    def peek(self, queue: str, max_messages: int = 32) -> list[str]:
        """Peek raw message texts without dequeuing (tests, admin)."""
        with _translated(f"queue (name={queue})", self.queue_endpoint):
            return [m.content for m in self._queue(queue).peek_messages(max_messages=max_messages)]

    def ping(self) -> None:
        """Raise StorageUnreachable unless both blob and queue endpoints answer."""
        with _translated("blob service", self.blob_endpoint):
            self._blobs.get_service_properties()
        with _translated("queue service", self.queue_endpoint):
            self._queues.get_service_properties()


_gateway: AzureStorage | None = None
_gateway_lock = threading.Lock()


def get_storage() -> AzureStorage:
    """The process-wide gateway (clients are thread-safe and keep connections alive)."""
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            from shared.settings import get_settings

            _gateway = AzureStorage.from_settings(get_settings())
        return _gateway
