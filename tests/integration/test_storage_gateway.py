"""The storage gateway against a real Azurite: ETag semantics, create-only, queues."""
from __future__ import annotations

import base64
import json
import threading

import pytest

from shared.errors import Conflict, NotFound, StorageUnreachable
from shared.settings import Settings
from shared.storage import AzureStorage


def test_write_then_read_returns_data_and_etag(storage, unique):
    etag = storage.write("gateway", f"{unique}/a.bin", b"hello")
    blob = storage.read("gateway", f"{unique}/a.bin")
    assert blob.data == b"hello" and blob.etag == etag


def test_reading_a_missing_blob_raises_not_found_naming_it(storage, unique):
    with pytest.raises(NotFound, match=f"path={unique}/missing"):
        storage.read("gateway", f"{unique}/missing")


def test_create_only_refuses_to_overwrite(storage, unique):
    assert storage.create_json("gateway", f"{unique}/v1.json", {"n": 1}) is True
    assert storage.create_json("gateway", f"{unique}/v1.json", {"n": 2}) is False
    assert storage.read_json("gateway", f"{unique}/v1.json")[0] == {"n": 1}


def test_write_with_stale_etag_is_a_conflict(storage, unique):
    path = f"{unique}/alias.json"
    first = storage.write_json("gateway", path, {"v": 1})
    storage.write_json("gateway", path, {"v": 2}, if_match=first)
    with pytest.raises(Conflict):
        storage.write_json("gateway", path, {"v": 3}, if_match=first)
    assert storage.read_json("gateway", path)[0] == {"v": 2}


def test_concurrent_update_json_loses_no_increment(storage, unique):
    path = f"{unique}/counter.json"

    def bump() -> None:
        for _ in range(5):
            storage.update_json("gateway", path, lambda cur: {"n": (cur or {"n": 0})["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.read_json("gateway", path)[0] == {"n": 20}


def test_list_by_prefix(storage, unique):
    for name in ("a", "b", "c"):
        storage.write("gateway", f"{unique}/list/{name}", b"x")
    names = sorted(i.name for i in storage.list("gateway", f"{unique}/list/"))
    assert names == [f"{unique}/list/a", f"{unique}/list/b", f"{unique}/list/c"]
    assert storage.list(f"nocontainer{unique}") == []


def test_enqueue_encodes_base64_json_like_the_trigger_expects(storage, unique):
    queue = f"q-{unique}"
    storage.enqueue(queue, {"run": 1})
    [raw] = storage.peek(queue)
    assert json.loads(base64.b64decode(raw)) == {"run": 1}
    [msg] = storage.receive(queue, max_messages=1, visibility_timeout=30)
    assert msg.dequeue_count == 1
    storage.delete_message(queue, msg)
    assert storage.peek(queue) == []


def test_unreachable_storage_names_the_endpoint():
    dead = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    gateway = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": dead}))
    with pytest.raises(StorageUnreachable, match="127.0.0.1:9"):
        gateway.ping()
