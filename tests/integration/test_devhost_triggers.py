"""The local host's queue, blob and timer triggers against Azurite, observed through storage."""
from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from devhost import DevHost, DevHostError, FakeClock, bindingdata
from devhost.azurite import Azurite
from devhost.blobqueue import SharedBlobQueueListener
from devhost.blobs import (
    BLOB_POISON_QUEUE,
    UPLOAD_SCAN_INTERVAL,
    UPLOAD_WATCH_SECONDS,
    BlobScanner,
    EventGridSource,
)
from devhost.config import load_host_json
from devhost.timers import Schedule, use_monitor
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import SEMANTICS_APP, Start, b64, decode_json_message, records, wait_for

# -- queues -----------------------------------------------------------------------------------

def test_failing_message_goes_to_poison_after_max_dequeue_count_with_its_original_body(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    start()
    queue = env["FLAKY_QUEUE"]
    sent = storage.enqueue(queue, {"fail_times": 99, "n": 1})
    poisoned = wait_for(lambda: storage.peek(f"{queue}-poison"), "the poison message")
    assert poisoned == [b64('{"fail_times": 99, "n": 1}')]  # host.json maxDequeueCount is 3
    runs = sorted(r["dequeue_count"] for r in records(storage, env, "flaky"))
    assert runs == [1, 2, 3]
    assert all(r["id"] == sent for r in records(storage, env, "flaky"))
    assert storage.peek(queue) == []


def test_message_that_fails_once_is_retried_and_then_deleted(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    start()
    storage.enqueue(env["FLAKY_QUEUE"], {"fail_times": 1})
    runs = wait_for(lambda: [r for r in records(storage, env, "flaky") if r["dequeue_count"] == 2], "the retry")
    assert runs[0]["pop_receipt"] and runs[0]["insertion_time"] != "None" and runs[0]["expiration_time"] != "None"
    wait_for(lambda: storage.peek(env["FLAKY_QUEUE"]) == [], "the message to be deleted")
    assert storage.peek(f"{env['FLAKY_QUEUE']}-poison") == []


def test_undecodable_message_goes_to_poison_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="devhost"):
        start()
        storage.enqueue_raw(env["FLAKY_QUEUE"], "this is not base64!")
        assert wait_for(lambda: storage.peek(f"{env['FLAKY_QUEUE']}-poison"), "poison") == ["this is not base64!"]
    assert records(storage, env, "flaky") == []
    assert any("could not be decoded" in r.getMessage() and "-poison" in r.getMessage() for r in caplog.records)


def test_message_dequeued_more_than_max_times_is_poisoned_without_running_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    queue = env["FLAKY_QUEUE"]
    storage.enqueue(queue, {"n": 1})
    for _ in range(3):  # three deliveries whose invocations never completed (crashed hosts)
        [msg] = storage.receive(queue, max_messages=1, visibility_timeout=30)
        storage.release(queue, msg, visibility_timeout=0)
    start()
    assert wait_for(lambda: storage.peek(f"{queue}-poison"), "poison") == [b64('{"n": 1}')]
    assert records(storage, env, "flaky") == []


def test_a_batch_runs_concurrently(start: Start, storage: AzureStorage, env: dict[str, str]) -> None:
    for _ in range(4):  # host.json batchSize 4
        storage.enqueue(env["SLOW_QUEUE"], {"seconds": 1.5})
    start()
    wait_for(lambda: len(records(storage, env, "slow-started")) == 4, "four concurrent invocations", timeout=5)
    assert records(storage, env, "slow-finished") == []  # sequential runs would have finished three


# -- blobs ------------------------------------------------------------------------------------

def blob_runs(storage: AzureStorage, env: dict[str, str], name: str) -> list[dict[str, Any]]:
    return [r for r in records(storage, env, "blob") if r["name"] == f"{env['BLOB_CONTAINER']}/{name}"]


def receipts_folder(env: dict[str, str], function: str) -> str:
    """Where the fixture host (its id derived from the test's records container) keeps a function's blob receipts."""
    return f"blobreceipts/test-{env['FIXTURE_RECORDS'][4:]}/Host.Functions.{function}/"


def test_blob_fires_once_per_etag_and_a_restart_does_not_fire_it_again(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    container = env["BLOB_CONTAINER"]
    storage.write(container, "g1/a.txt", b"hello")
    host = start()
    [run] = wait_for(lambda: blob_runs(storage, env, "g1/a.txt"), "the blob invocation")
    assert run["length"] == 5 and run["data"] == "hello"
    assert run["uri"].endswith(f"/{container}/g1/a.txt")
    receipts = receipts_folder(env, "blob_scan")
    wait_for(lambda: storage.list("azure-webjobs-hosts", receipts), "the receipt")
    host.stop()
    start()
    storage.write(container, "g1/b.txt", b"later")  # seen in the same scan as a.txt, or a later one
    wait_for(lambda: blob_runs(storage, env, "g1/b.txt"), "the second blob")
    assert len(blob_runs(storage, env, "g1/a.txt")) == 1


def test_overwritten_blob_fires_again(start: Start, storage: AzureStorage, env: dict[str, str]) -> None:
    start()
    storage.write(env["BLOB_CONTAINER"], "g/x.txt", b"v1")
    wait_for(lambda: blob_runs(storage, env, "g/x.txt"), "v1")
    storage.write(env["BLOB_CONTAINER"], "g/x.txt", b"v2")
    runs = wait_for(lambda: [r["data"] for r in blob_runs(storage, env, "g/x.txt")] if
                    len(blob_runs(storage, env, "g/x.txt")) == 2 else None, "v2")
    assert sorted(runs) == ["v1", "v2"]


def test_blob_outside_the_path_pattern_does_not_fire(start: Start, storage: AzureStorage, env: dict[str, str]) -> None:
    start()
    storage.write(env["BLOB_CONTAINER"], "top-level.txt", b"no group segment")
    storage.write(env["BLOB_CONTAINER"], "g/in.txt", b"in")
    wait_for(lambda: blob_runs(storage, env, "g/in.txt"), "the matching blob")
    assert blob_runs(storage, env, "top-level.txt") == []


def test_blob_poison_after_five_failures_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    container = env["BLOB_CONTAINER"]
    start()
    storage.write(container, "g/bad.txt", b"fail please")

    def poison() -> list[Any]:
        return [m for m in map(decode_json_message, storage.peek(BLOB_POISON_QUEUE)) if m["ContainerName"] == container]

    [message] = wait_for(poison, "the blob poison message")
    assert message["FunctionId"] == "Host.Functions.blob_scan" and message["BlobName"] == "g/bad.txt"
    assert message["BlobType"] == "BlockBlob" and message["ETag"]
    storage.write(container, "g/good.txt", b"fine")  # later scans have passed once this runs
    wait_for(lambda: blob_runs(storage, env, "g/good.txt"), "a later blob")
    assert len(blob_runs(storage, env, "g/bad.txt")) == 5


def test_event_grid_blob_trigger_fires_through_the_local_event_grid_and_the_blobs_webhook(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    start()
    storage.write(env["EG_CONTAINER"], "e.txt", b"abc")
    [run] = wait_for(lambda: records(storage, env, "blob-eg"), "the EventGrid-sourced blob trigger")
    assert run == {"name": f"{env['EG_CONTAINER']}/e.txt", "length": 3}
    # the scan published a BlobCreated event (receipt), the webhook queued it, the queue listener ran it
    receipts = receipts_folder(env, "blob_eventgrid")
    [receipt] = wait_for(lambda: storage.list("azure-webjobs-hosts", receipts), "the receipt")
    assert storage.read_json("azure-webjobs-hosts", receipt.name)[0]["status"] == "published"


class _CountingLists:
    """The scanner's receipts storage, counting its listings."""

    def __init__(self, storage: AzureStorage) -> None:
        self._storage, self.listings = storage, 0

    def list(self, container: str, prefix: str = "") -> Any:
        self.listings += 1
        return self._storage.list(container, prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def test_a_scan_lists_the_receipts_only_when_the_container_shows_a_version_without_a_known_one(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    container = env["EG_CONTAINER"]
    storage.write(container, "r1.txt", b"one")
    # a clock never advanced: the loop scans once, at start, so its scans cannot race this test's (two scans that
    # both find r2.txt before either writes its receipt would both publish it, as two Event Grid deliveries)
    host = start(clock=FakeClock(datetime(2024, 1, 1, tzinfo=UTC)))
    [scanner] = [x for x in host._listeners if isinstance(x, EventGridSource) and x.spec.name == "blob_eventgrid"]
    receipts = receipts_folder(env, "blob_eventgrid")
    [receipt] = wait_for(lambda: storage.list("azure-webjobs-hosts", receipts), "the first receipt")
    wait_for(lambda: receipt.name in scanner._receipted, "the receipt in the scanner's cache")
    counting = _CountingLists(scanner._hosts)
    scanner._hosts = counting  # type: ignore[assignment]
    for _ in range(3):
        scanner.scan()
    assert counting.listings == 0  # the container alone: nothing in it lacks a known receipt
    storage.write(container, "r2.txt", b"two")
    scanner.scan()
    assert counting.listings == 1  # a version with no known receipt: the receipts are listed again
    wait_for(lambda: len(storage.list("azure-webjobs-hosts", receipts)) == 2, "the second receipt")
    wait_for(lambda: len(records(storage, env, "blob-eg")) == 2, "both invocations")
    assert sorted(r["name"] for r in records(storage, env, "blob-eg")) == [f"{container}/r1.txt", f"{container}/r2.txt"]


def test_a_new_blob_being_uploaded_quickens_the_scans_until_its_commit_hands_it_on(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))  # never advanced but here: the loop scans once, at start
    host = start(clock=clock)
    [scanner] = [x for x in host._listeners if isinstance(x, EventGridSource) and x.spec.name == "blob_eventgrid"]
    interval = scanner.next_interval()
    assert interval > UPLOAD_SCAN_INTERVAL
    container = env["EG_CONTAINER"]
    service = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    service.create_container(container)
    blob = service.get_blob_client(container, "big.csv")
    blob.stage_block("YmxvY2stMQ==", b"x" * 1000)  # the upload has begun: a block staged, no commit
    scanner.scan()
    assert scanner.next_interval() == UPLOAD_SCAN_INTERVAL
    receipts = receipts_folder(env, "blob_eventgrid")
    assert storage.list("azure-webjobs-hosts", receipts) == []  # watched, not handed on: nothing to read yet
    blob.commit_block_list(["YmxvY2stMQ=="])
    scanner.scan()
    [run] = wait_for(lambda: records(storage, env, "blob-eg"), "the committed blob's invocation")
    assert run["name"] == f"{container}/big.csv"
    assert len(storage.list("azure-webjobs-hosts", receipts)) == 1
    assert scanner.next_interval() == interval
    # an upload whose client went away quickens the scans for UPLOAD_WATCH_SECONDS only (the clock is advanced
    # with nothing left to hand on, so the loop's own scan cannot race this one's)
    service.get_blob_client(container, "abandoned.csv").stage_block("YmxvY2stMQ==", b"x")
    scanner.scan()
    assert scanner.next_interval() == UPLOAD_SCAN_INTERVAL
    clock.advance(UPLOAD_WATCH_SECONDS)
    scanner.scan()
    assert scanner.next_interval() == interval
    assert len(records(storage, env, "blob-eg")) == 1


def test_blobs_max_degree_of_parallelism_from_host_json(
    env: dict[str, str], tmp_path: Path, azurite: Azurite,
) -> None:
    assert load_host_json(SEMANTICS_APP).blobs_max_parallel == 8 * (os.cpu_count() or 1)  # the host's default
    app = tmp_path / "app"
    shutil.copytree(SEMANTICS_APP, app)
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["blobs"] = {"maxDegreeOfParallelism": 0}
    (app / "host.json").write_text(json.dumps(host_json))
    with pytest.raises(DevHostError, match=r"maxDegreeOfParallelism=0"):
        load_host_json(app)
    host_json["extensions"]["blobs"] = {"MaxDegreeOfParallelism": 3}  # keys bind case-insensitively
    (app / "host.json").write_text(json.dumps(host_json))
    host = DevHost(app, env=env, port=0, blob_scan_interval=0.1).start()
    try:
        scanners = [x for x in host._listeners if isinstance(x, BlobScanner)]
        assert scanners and all(s.max_parallel == 3 for s in scanners)
        [queue] = [x for x in host._listeners if isinstance(x, SharedBlobQueueListener)]
        # SharedBlobQueueListenerFactory: BatchSize = 3 / 2 + 1, NewBatchThreshold = 3 - BatchSize
        assert (queue._opt.batch_size, queue._opt.new_batch_threshold) == (2, 1)
    finally:
        host.stop(grace_seconds=2)


# -- timers -----------------------------------------------------------------------------------

def test_timer_runs_on_startup_then_on_its_ncrontab_schedule(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    clock = FakeClock(datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC))
    start(clock=clock, env={"TICK_SCHEDULE": "0 */5 * * * *"})
    [first] = wait_for(lambda: records(storage, env, "tick"), "the runOnStartup invocation")
    assert first["past_due"] is False
    clock.advance(298)
    clock.advance(1)  # 00:05:00 is the next occurrence
    ticks = wait_for(lambda: (t := records(storage, env, "tick")) and len(t) == 2 and t, "the 00:05:00 tick")
    assert [t["past_due"] for t in ticks] == [False, False]


def test_occurrence_missed_while_stopped_runs_at_startup_as_past_due_like_the_host(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    clock = FakeClock(datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC))
    schedule = {"TICK_SCHEDULE": "0 */5 * * * *"}
    host = start(clock=clock, env=schedule)
    wait_for(lambda: records(storage, env, "tick"), "the runOnStartup invocation")
    wait_for(lambda: storage.list("azure-webjobs-hosts", f"timers/test-{env['FIXTURE_RECORDS'][4:]}/"), "status")
    host.stop()
    start(clock=FakeClock(datetime(2024, 1, 1, 0, 20, 0, tzinfo=UTC)), env=schedule)
    ticks = wait_for(lambda: (t := records(storage, env, "tick")) and len(t) == 2 and t, "the past-due run")
    assert sorted(t["past_due"] for t in ticks) == [False, True]


def test_timer_use_monitor_defaults_false_for_sub_minute_schedules(
    start: Start, storage: AzureStorage, env: dict[str, str],
) -> None:
    now = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)

    def monitored(schedule: str, configured: object = None) -> bool:
        return use_monitor(configured, Schedule(schedule, "test"), now)

    # TimerSchedule.Create: UseMonitor (default true) is turned off for schedules more frequent than a minute
    assert monitored("0 */5 * * * *") and monitored("0 * * * * *") and monitored("* 1-5 * * * *")
    assert not monitored("*/10 * * * * *") and not monitored("10,20,45 * * * * *")
    assert monitored("00:01:00") and not monitored("00:00:30")
    assert not monitored("0 */5 * * * *", False)  # an explicit false stays false
    assert not monitored("*/10 * * * * *", True)  # and an explicit true does not keep a sub-minute monitor
    clock = FakeClock(now)
    start(clock=clock, env={"TICK_SCHEDULE": "*/10 * * * * *"})
    wait_for(lambda: records(storage, env, "tick"), "the runOnStartup invocation")
    clock.advance(10)
    wait_for(lambda: len(records(storage, env, "tick")) == 2, "the 00:00:10 tick")  # after the first's status write
    assert storage.list("azure-webjobs-hosts", f"timers/test-{env['FIXTURE_RECORDS'][4:]}/") == []


# -- startup ----------------------------------------------------------------------------------

def test_existing_environment_variable_wins_over_local_settings_like_func(start: Start) -> None:
    start(env={"FIXTURE_FROM_SETTINGS": "from-shell"})
    assert os.environ["FIXTURE_FROM_SETTINGS"] == "from-shell"
    assert os.environ["TICK_SCHEDULE"] == "0 0 0 1 1 *"  # from local.settings.sample.json Values


def test_environment_is_restored_after_stop(start: Start) -> None:
    host = start()
    assert "FIXTURE_RECORDS" in os.environ
    host.stop()
    assert "FIXTURE_RECORDS" not in os.environ


def test_unsupported_trigger_names_the_function_and_type(azurite: Azurite) -> None:
    app = SEMANTICS_APP.parent / "unsupported_app"
    with pytest.raises(DevHostError, match=r"function on_event: trigger type eventHubTrigger is not supported"):
        DevHost(app, env={"AzureWebJobsStorage": azurite.connection_string}, port=0).start()


def test_import_failure_names_the_module_and_the_error(azurite: Azurite) -> None:
    app = SEMANTICS_APP.parent / "broken_app"
    with pytest.raises(DevHostError, match=r"module=function_app.*ModuleNotFoundError.*module_that_does_not_exist"):
        DevHost(app, env={"AzureWebJobsStorage": azurite.connection_string}, port=0).start()


def test_settings_file_supplies_values_port_and_keys(start: Start, tmp_path: Path) -> None:
    settings = tmp_path / "my.settings.json"
    settings.write_text(json.dumps({
        "Values": {"FIXTURE_FROM_SETTINGS": "from-my-file", "TICK_SCHEDULE": "0 0 0 1 1 *"},
        "DevHost": {"FunctionKeys": {"default": "my-key"}, "MasterKey": "my-master"},
    }))
    host = start(settings_path=settings)
    assert os.environ["FIXTURE_FROM_SETTINGS"] == "from-my-file"
    assert requests.get(f"{host.url}/api/items/1", headers={"x-functions-key": "my-key"}, timeout=10).status_code == 200
    assert requests.get(f"{host.url}/api/items/1", headers={"x-functions-key": "fixture-function-key"},
                        timeout=10).status_code == 401


def test_missing_binding_expression_setting_is_a_clear_error_and_nothing_keeps_running(
    env: dict[str, str], tmp_path: Path,
) -> None:
    settings = tmp_path / "empty.settings.json"
    settings.write_text(json.dumps({"Values": {}}))
    host = DevHost(SEMANTICS_APP, env=env, port=0, settings_path=settings)
    with pytest.raises(DevHostError, match=r"function tick schedule: app setting TICK_SCHEDULE .* is not set"):
        host.start()
    assert "FIXTURE_RECORDS" not in os.environ  # stopped and restored


def test_an_sdk_type_blob_trigger_gets_a_blob_client_and_the_host_reads_no_bytes(
    start: Start, storage: AzureStorage, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parameter typed with the blob extension's BlobClient is a deferred binding, as on Azure: the function gets
    an azure.storage.blob.BlobClient made by the extension from the host's reference, and the host downloads
    nothing (batch_score reads files of any size in ranges this way)."""
    downloads: list[str] = []
    real = bindingdata.download
    monkeypatch.setattr(bindingdata, "download", lambda s, c, n: downloads.append(n) or real(s, c, n))
    host = start()
    [spec] = [s for s in host.functions if s.name == "blob_sdk_client"]
    assert spec.sdk_type is not None
    storage.write(env["SDK_CONTAINER"], "f/one.csv", b"a,b\n1,2\n")
    [run] = wait_for(lambda: records(storage, env, "blob-sdk"), "the SDK-type blob trigger")
    assert run == {"type": "azure.storage.blob._blob_client.BlobClient", "container": env["SDK_CONTAINER"],
                   "name": "f/one.csv", "data": "a,b\n1,2\n"}
    assert "f/one.csv" not in downloads
