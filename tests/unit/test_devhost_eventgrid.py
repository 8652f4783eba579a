"""The local host's Event Grid pieces without storage: events, the webhook protocol, the worker's blob argument."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.storage.blob import BlobProperties

from devhost.bindingdata import DownloadedBlob, blob_properties_json, input_stream, net_datetime
from devhost.blobqueue import blob_queue_options
from devhost.eventgrid import (
    BadEvents,
    CreatedBlob,
    account_name,
    blob_created_event,
    blob_trigger_message,
    parse_blob_url,
    webhook_answer,
)

AZURITE = "http://127.0.0.1:10000/devstoreaccount1"
NOW = datetime(2024, 5, 1, 12, 30, 15, 123400, tzinfo=UTC)


def created(name: str = "drops/a b.csv", etag: str = '"0x8DC1A2B3C4D5E6F"') -> CreatedBlob:
    return CreatedBlob(container="datasets", name=name, etag=etag, content_type="text/csv", content_length=42,
                       url=f"{AZURITE}/datasets/drops/a%20b.csv", last_modified=NOW - timedelta(seconds=1))


# -- events ------------------------------------------------------------------------------------

def test_blob_created_event_has_the_event_grid_schema_azure_storage_publishes() -> None:
    event = blob_created_event(created(), account=account_name(AZURITE), now=NOW)
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert event["topic"].startswith("/subscriptions/")
    assert event["subject"] == "/blobServices/default/containers/datasets/blobs/drops/a b.csv"
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["eventTime"] == "2024-05-01T12:30:15.1234000Z"
    assert (event["dataVersion"], event["metadataVersion"]) == ("", "1") and event["id"]
    data = event["data"]
    assert data["eTag"] == "0x8DC1A2B3C4D5E6F"  # unquoted, as Event Grid sends it
    assert (data["contentType"], data["contentLength"], data["blobType"]) == ("text/csv", 42, "BlockBlob")
    assert data["url"] == f"{AZURITE}/datasets/drops/a%20b.csv"
    assert data["api"] and data["clientRequestId"] and data["requestId"] and data["storageDiagnostics"]["batchId"]
    assert len(data["sequencer"]) == 32
    later = blob_created_event(CreatedBlob(**{**created().__dict__, "last_modified": NOW}), account="a", now=NOW)
    assert later["data"]["sequencer"] > data["sequencer"]  # ordered for writes of one blob


def test_account_and_blob_from_urls_path_style_on_azurite_host_style_on_azure() -> None:
    assert account_name(AZURITE) == "devstoreaccount1"
    assert account_name("https://mlopsdata.blob.core.windows.net/") == "mlopsdata"
    assert parse_blob_url(f"{AZURITE}/datasets/drops/a%20b.csv") == ("datasets", "drops/a b.csv")
    assert parse_blob_url("http://localhost:10000/devstoreaccount1/c/x.txt") == ("c", "x.txt")
    assert parse_blob_url("https://acct.blob.core.windows.net/datasets/iris/d.csv") == ("datasets", "iris/d.csv")
    for bad in ("https://acct.blob.core.windows.net/onlycontainer", f"{AZURITE}/c/", f"{AZURITE}"):
        with pytest.raises(BadEvents):
            parse_blob_url(bad)


def test_blob_trigger_message_is_the_hosts_with_a_quoted_etag() -> None:
    event = blob_created_event(created(), account="devstoreaccount1", now=NOW)
    assert blob_trigger_message(event, "Host.Functions.prepare") == {
        "Type": "BlobTrigger", "FunctionId": "Host.Functions.prepare", "BlobType": "BlockBlob",
        "ContainerName": "datasets", "BlobName": "drops/a b.csv", "ETag": '"0x8DC1A2B3C4D5E6F"'}
    page = {"data": {"url": f"{AZURITE}/c/p", "blobType": "PageBlob"}}
    assert blob_trigger_message(page, None)["BlobType"] == "PageBlob"
    assert blob_trigger_message(page, None)["ETag"] == '""'  # no eTag: the host quotes an empty one
    for bad in ({"data": {"blobType": "BlockBlob"}}, {"data": {"url": f"{AZURITE}/c/p"}}, {"nodata": 1}):
        with pytest.raises(BadEvents):
            blob_trigger_message(bad, "Host.Functions.x")


# -- the webhook protocol -----------------------------------------------------------------------

def test_webhook_answers_by_the_aeg_event_type_header_like_http_request_processor() -> None:
    validation = [{"data": {"validationCode": "abc"}, "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent"}]
    answer = webhook_answer("SubscriptionValidation", json.dumps(validation).encode())
    assert (answer.status, json.loads(answer.body)) == (200, {"validationResponse": "abc"})
    cloud = {"data": json.dumps({"validationCode": "xyz"}), "type": "Microsoft.EventGrid.SubscriptionValidationEvent"}
    assert json.loads(webhook_answer("subscriptionvalidation", json.dumps(cloud).encode()).body) == {
        "validationResponse": "xyz"}  # CloudEvents: data arrives JSON-encoded; header case does not matter
    one = {"data": {"url": "u"}}
    assert webhook_answer("Notification", json.dumps([one, one]).encode()).events == (one, one)
    assert webhook_answer("Notification", json.dumps(one).encode()).events == (one,)  # an object is one event
    assert webhook_answer("Notification", json.dumps(one).encode()).status == 202
    assert webhook_answer("Unsubscribe", b"").status == 202
    assert webhook_answer(None, json.dumps([one]).encode()).status == 400
    assert webhook_answer("Something", b"[]").status == 400


def test_webhook_answers_400_for_a_body_it_cannot_read() -> None:
    assert webhook_answer("Notification", b"{not json").status == 400
    assert webhook_answer("Notification", b"42").status == 400
    assert webhook_answer("Notification", b'["not an event"]').status == 400
    assert webhook_answer("SubscriptionValidation", b'[{"data": {}}]').status == 400
    assert webhook_answer("SubscriptionValidation", b"[]").status == 400


# -- the blob trigger's argument ----------------------------------------------------------------

def properties(data: bytes, **extra: object) -> BlobProperties:
    headers: dict[str, object] = {
        "name": "drops/a.csv", "Last-Modified": datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        "x-ms-creation-time": datetime(2024, 4, 30, 8, 0, 0, 500000, tzinfo=UTC), "ETag": '"0x8DC1"',
        "Content-Length": len(data), "x-ms-blob-type": "BlockBlob", "Content-Type": "text/csv",
        "Content-MD5": bytearray(hashlib.md5(data).digest()), "x-ms-lease-status": "unlocked",
        "x-ms-lease-state": "available", "x-ms-server-encrypted": True, "metadata": {"owner": "ds"}, **extra,
    }
    return BlobProperties(**headers)


def test_blob_properties_are_serialized_as_the_host_sends_them() -> None:
    data = b"a,b\n1,2\n"
    props = blob_properties_json(properties(data))
    assert list(props)[:6] == ["LastModified", "CreatedOn", "Metadata", "ObjectReplicationDestinationPolicyId",
                               "ObjectReplicationSourceProperties", "BlobType"]
    assert props["LastModified"] == "2024-05-01T12:00:00+00:00"
    assert props["CreatedOn"] == "2024-04-30T08:00:00.5+00:00"  # fractional digits without trailing zeros
    assert props["CopyCompletedOn"] == "0001-01-01T00:00:00+00:00"  # default(DateTimeOffset)
    assert (props["BlobType"], props["LeaseStatus"], props["LeaseState"]) == (0, 1, 0)  # enums as numbers
    assert props["ETag"] == {}  # Azure.ETag has no public properties: Newtonsoft writes {}
    assert props["ContentHash"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert (props["ContentLength"], props["ContentType"]) == (len(data), "text/csv")
    assert props["Metadata"] == {"owner": "ds"}
    assert props["IsServerEncrypted"] is True
    assert props["ImmutabilityPolicy"] == {"ExpiresOn": None, "PolicyMode": None}
    assert blob_properties_json(properties(data, **{"Content-MD5": None}))["ContentHash"] is None
    plus_two = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert net_datetime(plus_two) == "2024-01-02T03:04:05+02:00"


def test_input_stream_is_made_by_the_workers_converter_from_the_trigger_metadata() -> None:
    data = b"a,b\n1,2\n"
    blob = DownloadedBlob("datasets", "iris/d.csv", data, properties(data), f"{AZURITE}/datasets/iris/d.csv")
    stream = input_stream(blob, {"model": "iris", "name": "d.csv"})
    assert stream.read() == data
    assert (stream.name, stream.uri, stream.length) == ("datasets/iris/d.csv", f"{AZURITE}/datasets/iris/d.csv", 8)
    assert stream.metadata == {"owner": "ds"}
    assert stream.blob_properties is not None and stream.blob_properties["ContentType"] == "text/csv"


def test_blob_queue_batch_sizes_split_max_degree_of_parallelism_like_the_host() -> None:
    def sizes(parallel: int) -> tuple[int, int]:
        options = blob_queue_options(parallel, 5, "base64")
        return options.batch_size, options.new_batch_threshold

    assert sizes(1) == (1, 0) and sizes(8) == (5, 3) and sizes(16) == (9, 7) and sizes(100) == (32, 68)
    assert blob_queue_options(8, 5, "none").max_dequeue_count == 5
