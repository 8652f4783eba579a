"""EventGrid-source blob triggers take Azure's path: BlobCreated events through the blobs extension's webhook.

The webhook (/runtime/webhooks/blobs) answers Event Grid's validation handshake, takes the system key,
and puts one message per event on the host's blob trigger queue; the shared blob queue listener runs
the function with the host's retries and poison queue. Locally the container scan plays Event Grid.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from typing import Any

import pytest
import requests

from devhost.azurite import Azurite
from devhost.blobs import BLOB_POISON_QUEUE
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import (
    MASTER_KEY,
    Start,
    blob_created,
    decode_json_message,
    post_to_blobs_webhook,
    records,
    upload,
    wait_for,
)

NET_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?\+00:00$")  # Newtonsoft's DateTimeOffset





def props_runs(storage: AzureStorage, env: dict[str, str], name: str) -> list[dict[str, Any]]:
    return [r for r in records(storage, env, "blob-props") if r["name"] == f"{env['EG_PROPS_CONTAINER']}/{name}"]


def blob_url(storage: AzureStorage, container: str, name: str) -> str:
    return f"{storage.blob_endpoint.rstrip('/')}/{container}/{name}"


def trigger_queue(env: dict[str, str]) -> str:
    return f"azure-webjobs-blobtrigger-{env['AzureFunctionsWebHost__hostid']}"


def test_event_grid_blob_created_event_through_the_blobs_webhook_triggers_the_function_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str], azurite: Azurite,
) -> None:
    host = start(event_grid=False)  # no local Event Grid: only the events posted here
    container = env["EG_PROPS_CONTAINER"]
    etag = upload(azurite, container, "eg/posted.txt", b"by hand", content_type="text/plain")
    event = blob_created(blob_url(storage, container, "eg/posted.txt"), etag, 7)
    r = post_to_blobs_webhook(host.url, [event])
    assert r.status_code == 202  # BlobsExtensionConfigProvider.ProcessEventsAsync: Accepted
    [run] = wait_for(lambda: props_runs(storage, env, "eg/posted.txt"), "the function run from the event")
    assert (run["source"], run["data"], run["length"]) == ("EventGrid", "by hand", 7)
    # an event object on its own counts as a one-event array (HttpRequestProcessor)
    assert post_to_blobs_webhook(host.url, event).status_code == 202
    wait_for(lambda: len(props_runs(storage, env, "eg/posted.txt")) == 2, "the second delivery's run")
    # through the host's blob trigger queue, whose messages are deleted once the function succeeded
    wait_for(lambda: storage.peek(trigger_queue(env)) == [], "the blob trigger queue to drain")


def test_local_event_grid_publishes_each_new_blob_version_once_through_the_webhook(
    start: Start, storage: AzureStorage, env: dict[str, str], azurite: Azurite, caplog: pytest.LogCaptureFixture,
) -> None:
    container = env["EG_PROPS_CONTAINER"]
    with caplog.at_level(logging.INFO, logger="devhost"):
        host = start()
        upload(azurite, container, "eg/v.txt", b"v1")
        wait_for(lambda: props_runs(storage, env, "eg/v.txt"), "v1")
        upload(azurite, container, "eg/v.txt", b"v2")
        runs = wait_for(lambda: (r := props_runs(storage, env, "eg/v.txt")) and len(r) == 2 and r, "v2")
    assert sorted(r["data"] for r in runs) == ["v1", "v2"]
    assert any("Reason='New blob detected(EventGrid): " in r.getMessage() for r in caplog.records)
    receipts = f"blobreceipts/{env['AzureFunctionsWebHost__hostid']}/Host.Functions.blob_eg_props/"
    wait_for(lambda: len(storage.list("azure-webjobs-hosts", receipts)) == 2, "a receipt per published version")
    host.stop()
    start()
    upload(azurite, container, "eg/w.txt", b"later")  # published in the same scan as v.txt, or a later one
    wait_for(lambda: props_runs(storage, env, "eg/w.txt"), "a blob written after the restart")
    assert len(props_runs(storage, env, "eg/v.txt")) == 2  # no new event for versions already published


def test_subscription_validation_handshake_answers_the_validation_code(start: Start) -> None:
    host = start(event_grid=False)
    code = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    validation = [{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/xx/resourceGroups/rg/providers/"
        "Microsoft.Storage/storageAccounts/acct", "subject": "",
        "data": {"validationCode": code, "validationUrl": "https://rp-eastus2.eventgrid.azure.net/validate"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1", "dataVersion": "1",
    }]
    r = post_to_blobs_webhook(host.url, validation, event_type="SubscriptionValidation")
    assert r.status_code == 200
    assert json.loads(r.text) == {"validationResponse": code}
    assert post_to_blobs_webhook(host.url, [], event_type="Unsubscribe").status_code == 202
    assert post_to_blobs_webhook(host.url, [], event_type=None).status_code == 400  # no aeg-event-type
    assert post_to_blobs_webhook(host.url, None, raw=b"{not json").status_code == 400
    assert post_to_blobs_webhook(host.url, [{"data": {"api": "PutBlob"}}]).status_code == 400  # no data.url


def test_webhook_refuses_a_missing_or_wrong_key(start: Start) -> None:
    host = start(event_grid=False)
    validation = [{"data": {"validationCode": "c0de"}, "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent"}]

    def status(key: str | None, *, header: bool = False, extension: str = "blobs") -> int:
        r = requests.post(f"{host.url}/runtime/webhooks/{extension}", params={"functionName": "Host.Functions.x",
                          **({"code": key} if key and not header else {})},
                          headers={"aeg-event-type": "SubscriptionValidation",
                                   **({"x-functions-key": key} if key and header else {})},
                          json=validation, timeout=10)
        return r.status_code

    assert status(None) == 401
    assert status("wrong") == 401
    assert status("fixture-function-key") == 401  # a function key is not a system key
    assert status(host.system_keys["blobs_extension"]) == 200
    assert status(host.system_keys["blobs_extension"], header=True) == 200
    assert status(MASTER_KEY, header=True) == 200  # the master key passes every system level
    assert status(MASTER_KEY, extension="eventgrid") == 404  # no webhook handler for that extension
    assert status(host.system_keys["blobs_extension"], extension="eventgrid") == 401  # not its key


def test_webhook_needs_no_key_with_auth_off(start: Start) -> None:
    host = start(event_grid=False, auth=False)
    validation = [{"data": {"validationCode": "open"}, "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent"}]
    r = post_to_blobs_webhook(host.url, validation, key=None, event_type="SubscriptionValidation")
    assert (r.status_code, json.loads(r.text)) == (200, {"validationResponse": "open"})


def test_event_for_an_unknown_function_is_accepted_then_skipped_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str], azurite: Azurite, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="devhost"):
        host = start(event_grid=False)
        container = env["EG_PROPS_CONTAINER"]
        etag = upload(azurite, container, "eg/nobody.txt", b"x")
        event = blob_created(blob_url(storage, container, "eg/nobody.txt"), etag, 1)
        # the blobs extension does not check functionName: Accepted, then the executor drops the message
        assert post_to_blobs_webhook(host.url, [event], function="no_such_function").status_code == 202
        wait_for(lambda: any("function 'Host.Functions.no_such_function' cannot be found" in r.getMessage()
                             for r in caplog.records), "the skipped message")
    wait_for(lambda: storage.peek(trigger_queue(env)) == [], "the message to be completed")
    assert props_runs(storage, env, "eg/nobody.txt") == []


def test_event_grid_blob_poison_after_five_failures_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str], azurite: Azurite,
) -> None:
    container = env["EG_PROPS_CONTAINER"]
    start()
    etag = upload(azurite, container, "eg/bad.txt", b"fail please")

    def poison() -> list[Any]:
        return [m for m in map(decode_json_message, storage.peek(BLOB_POISON_QUEUE)) if m["ContainerName"] == container]

    [message] = wait_for(poison, "the blob poison message")
    # the host's BlobTriggerMessage, copied from its blob trigger queue after MaxDequeueCount (5) failures
    assert message == {"Type": "BlobTrigger", "FunctionId": "Host.Functions.blob_eg_props", "BlobType": "BlockBlob",
                       "ContainerName": container, "BlobName": "eg/bad.txt", "ETag": etag}
    assert len(props_runs(storage, env, "eg/bad.txt")) == 5
    assert storage.peek(trigger_queue(env)) == []


def test_blob_trigger_input_stream_carries_properties_and_metadata_like_the_worker(
    start: Start, storage: AzureStorage, env: dict[str, str], azurite: Azurite,
) -> None:
    container = env["EG_PROPS_CONTAINER"]
    start()
    data = b"a,b\n1,2\n"
    for name in ("eg/p.csv", "scan/p.csv"):  # both sources build the argument the same way
        upload(azurite, container, name, data, metadata={"owner": "ds", "run": "7"}, content_type="text/csv")
    for name, source in (("eg/p.csv", "EventGrid"), ("scan/p.csv", "LogsAndContainerScan")):
        [run] = wait_for(lambda n=name: props_runs(storage, env, n), f"the {source} run")  # type: ignore[misc]
        assert run["source"] == source and run["data"] == data.decode()
        assert run["length"] == len(data)  # from Properties.ContentLength, as the worker's converter reads it
        assert run["uri"] == blob_url(storage, container, name)
        assert run["metadata"] == {"owner": "ds", "run": "7"}
        props = run["properties"]
        assert props["ContentLength"] == len(data) and props["ContentType"] == "text/csv"
        assert props["ContentHash"] == base64.b64encode(hashlib.md5(data).digest()).decode()
        assert props["BlobType"] == 0  # Block: .NET enums travel as numbers
        assert props["ETag"] == {}  # Azure.ETag through Newtonsoft: use storage for the ETag, not this
        assert NET_DATE.match(props["LastModified"]) and NET_DATE.match(props["CreatedOn"])
        assert props["Metadata"] == {"owner": "ds", "run": "7"}
        assert props["LeaseStatus"] == 1 and props["AcceptRanges"] == "bytes"
