"""Event Grid for EventGrid-source blob triggers: BlobCreated events, and the blobs extension's webhook.

On Azure, an Event Grid subscription on the storage account POSTs Microsoft.Storage.BlobCreated events
to `/runtime/webhooks/blobs?functionName=Host.Functions.<name>&code=<blobs_extension system key>`.
The blobs extension answers the subscription validation handshake, and for notifications enqueues one
blob trigger message per event into the host's blob trigger queue and answers 202; the shared blob queue
listener then reads the blob and runs the function (devhost/blobqueue.py). Followed here:
- sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src/Config/BlobsExtensionConfigProvider.cs
  (ConvertAsync, ProcessEventsAsync -> 202 Accepted, GetBlobTriggerMessage);
- sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid/src/TriggerBinding/HttpRequestProcessor.cs
  (aeg-event-type: SubscriptionValidation -> 200 {"validationResponse": code}, Notification -> the
  events, Unsubscribe -> 202, anything else -> 400; a single JSON object counts as a one-event array);
- azure-functions-host HostController.ExtensionWebHookHandler (runtime/webhooks/{extensionName}: the
  `<extension>_extension` system key or the master key, 404 for an extension without a handler).
Locally nothing subscribes: devhost/blobs.py's EventGridSource turns each new blob version into the
event Azure would send and POSTs it through the same webhook (EventGridPublisher).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

from werkzeug.wrappers import Request, Response

from shared.errors import PipelineError

log = logging.getLogger("devhost")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
EVENT_TYPE_HEADER = "aeg-event-type"
WEBHOOK_PATH = "runtime/webhooks"
BLOBS_EXTENSION = "blobs"
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "devhost"


class BadEvents(ValueError):
    """A request body the webhook cannot process."""


# -- events ----------------------------------------------------------------------------------

def account_name(blob_endpoint: str) -> str:
    """The storage account of a blob endpoint (path-style on Azurite: http://127.0.0.1:10000/devstoreaccount1)."""
    url = urlparse(blob_endpoint)
    if _path_style(url.hostname or ""):
        return url.path.strip("/").split("/", 1)[0]
    return (url.hostname or "").split(".", 1)[0]


def _path_style(host: str) -> bool:
    """BlobUriBuilder's rule: an IP address (or localhost) carries the account name in the path."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_blob_url(url: str) -> tuple[str, str]:
    """(container, blob name) of a blob URL, as BlobUriBuilder reads data.url; BadEvents when it names none."""
    parsed = urlparse(url)
    segments = parsed.path.lstrip("/").split("/")
    if _path_style(parsed.hostname or ""):
        segments = segments[1:]  # the account name
    if len(segments) < 2 or not segments[0] or not "/".join(segments[1:]):
        raise BadEvents(f"data.url {url!r} does not name a blob (https://<account>.blob.core.windows.net/<container>/<blob>)")
    return unquote(segments[0]), unquote("/".join(segments[1:]))


@dataclass(frozen=True)
class CreatedBlob:
    """What a BlobCreated event says about the blob version that was written."""

    container: str
    name: str
    etag: str  # as storage gives it, quoted or not
    content_type: str | None
    content_length: int
    url: str
    last_modified: datetime | None = None


def _event_time(moment: datetime) -> str:
    # Event Grid writes 7 fractional digits and Z: 2017-06-26T18:41:00.9584103Z
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def blob_created_event(blob: CreatedBlob, *, account: str, now: datetime) -> dict[str, Any]:
    """A Microsoft.Storage.BlobCreated event in the Event Grid schema, as Azure Storage sends it."""
    modified = blob.last_modified or now
    return {
        "topic": f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{LOCAL_RESOURCE_GROUP}/providers/"
                 f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{blob.container}/blobs/{blob.name}",
        "eventType": BLOB_CREATED,
        "eventTime": _event_time(now),
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": blob.etag.strip('"'),  # Event Grid sends it unquoted: 0x8D4BCC2E4835CD0
            "contentType": blob.content_type or "application/octet-stream",
            "contentLength": blob.content_length,
            "blobType": "BlockBlob",
            "url": blob.url,
            # opaque, and ordered for the writes of one blob name
            "sequencer": f"{int(modified.timestamp() * 1_000_000):032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def blob_trigger_message(event: Mapping[str, Any], function_id: str | None) -> dict[str, Any]:
    """BlobsExtensionConfigProvider.GetBlobTriggerMessage: the queue message for one event (BadEvents if unusable)."""
    data = event.get("data") if isinstance(event, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
        raise BadEvents("each event needs data.url naming the blob")
    blob_type = str(data.get("blobType") or "")
    if blob_type.replace("Blob", "") not in ("Block", "Page", "Append"):
        raise BadEvents(f"data.blobType {data.get('blobType')!r} is not BlockBlob, PageBlob or AppendBlob")
    container, name = parse_blob_url(data["url"])
    etag = "" if data.get("eTag") is None else str(data["eTag"])
    # the host's BlobTriggerMessage JSON, in its property order
    return {"Type": "BlobTrigger", "FunctionId": function_id, "BlobType": blob_type.replace("Blob", "") + "Blob",
            "ContainerName": container, "BlobName": name, "ETag": f'"{etag}"'}


# -- the webhook protocol (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class WebhookAnswer:
    """What HttpRequestProcessor decides: a status, a body, and for notifications the events to process."""

    status: int
    body: str = ""
    events: tuple[Mapping[str, Any], ...] = field(default=())


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise BadEvents(f"the body is not JSON: {exc}") from exc


def _validation_code(body: bytes) -> str:
    events = _json(body)
    try:
        if isinstance(events, list):
            return str(events[0]["data"]["validationCode"])
        if isinstance(events, dict):  # CloudEvents schema: data arrives JSON-encoded
            data = events["data"]
            return str((json.loads(data) if isinstance(data, str) else data)["validationCode"])
    except (LookupError, TypeError, ValueError) as exc:
        raise BadEvents(f"no data.validationCode in the validation event: {exc!r}") from exc
    raise BadEvents("the validation body must be a JSON array or object")


def _notification_events(body: bytes) -> tuple[Mapping[str, Any], ...]:
    token = _json(body)
    events = [token] if isinstance(token, dict) else token
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadEvents("the body must be a JSON array of events (or one event object)")
    return tuple(events)


def webhook_answer(event_type: str | None, body: bytes) -> WebhookAnswer:
    """Decide on one webhook request by its aeg-event-type header, as HttpRequestProcessor.ProcessAsync does.

    One deliberate difference: a body that is not JSON, or a validation event without a code, is
    answered 400 here; the real host lets the parse error escape (500).
    """
    kind = (event_type or "").lower()
    try:
        if kind == "subscriptionvalidation":
            return WebhookAnswer(200, json.dumps({"validationResponse": _validation_code(body)}))
        if kind == "notification":
            return WebhookAnswer(202, events=_notification_events(body))
    except BadEvents as exc:
        return WebhookAnswer(400, str(exc))
    if kind == "unsubscribe":
        return WebhookAnswer(202)
    return WebhookAnswer(400, f"the {EVENT_TYPE_HEADER} header must be SubscriptionValidation, Notification "
                              "or Unsubscribe")


# -- the blobs extension's webhook handler ---------------------------------------------------

class TriggerQueue(Protocol):
    """Where the webhook puts blob trigger messages (the host's blob trigger queue)."""

    def enqueue(self, message: Mapping[str, Any]) -> None: ...


class BlobsWebhook:
    """POST /runtime/webhooks/blobs?functionName=Host.Functions.<name>: Event Grid into the blob trigger queue."""

    def __init__(self, queue: TriggerQueue) -> None:
        self._queue = queue

    def __call__(self, request: Request) -> Response:
        function_id = request.args.get("functionName")
        answer = webhook_answer(request.headers.get(EVENT_TYPE_HEADER), request.get_data())
        if answer.status == 200:
            log.info("perform handshake with eventGrid for function: %s", function_id)
        if not answer.events:
            return Response(answer.body, status=answer.status, content_type="text/plain; charset=utf-8")
        try:
            messages = [blob_trigger_message(event, function_id) for event in answer.events]
        except BadEvents as exc:
            return Response(str(exc), status=400, content_type="text/plain; charset=utf-8")
        try:
            for message in messages:
                self._queue.enqueue(message)
        except PipelineError as exc:
            log.error("blobs webhook: could not enqueue the blob trigger message: %s", exc)
            return Response(status=500)
        return Response(status=202)


# -- the local stand-in for the Event Grid subscription --------------------------------------

class EventGridPublisher:
    """Delivers events to the blobs webhook as an Event Grid subscription does (endpoint set once HTTP listens)."""

    def __init__(self, key: str | None) -> None:
        self.endpoint: str | None = None  # http://127.0.0.1:<port>/runtime/webhooks/blobs
        self._key = key

    def publish(self, function_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """POST the events (a JSON array) for one function; returns the HTTP status (0: not delivered)."""
        if self.endpoint is None:
            return 0
        url = f"{self.endpoint}?functionName={quote(function_id)}"
        if self._key:
            url += f"&code={quote(self._key)}"  # as the subscription's endpoint URL carries it on Azure
        request = urllib.request.Request(url, data=json.dumps(list(events)).encode(), method="POST", headers={
            "Content-Type": "application/json", EVENT_TYPE_HEADER: "Notification", "aeg-delivery-count": "0",
            "aeg-subscription-name": "DEVHOST-BLOBS", "aeg-data-version": "", "aeg-metadata-version": "1",
        })
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError as exc:
            log.warning("Event Grid delivery to %s failed: %s", self.endpoint, exc)
            return 0
