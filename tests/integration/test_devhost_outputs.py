"""Queue output bindings under the local host: written after a success only, and they wake the listener.

The host runs on a FakeClock that never advances, so a listener whose first poll found nothing polls
again only when something wakes it: a message reaching the next function proves the host's
SharedQueueWatcher fast path, not a polling interval.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from devhost import DevHost, FakeClock
from devhost.queues import QueueListener
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import SEMANTICS_APP, b64, records, wait_for


@pytest.fixture
def host(env: dict[str, str]) -> Iterator[DevHost]:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))  # never advanced: no poll happens by the clock
    started = DevHost(SEMANTICS_APP, env=env, port=0, clock=clock, blob_scan_interval=60).start()
    yield started
    started.stop(grace_seconds=2)


def _listener(host: DevHost, queue: str) -> QueueListener:
    return next(x for x in host._listeners if isinstance(x, QueueListener) and x.queue == queue)


def _idle(host: DevHost, *queues: str) -> None:
    """Wait until each listener made its first (empty) poll: from then on only a wake-up makes it poll."""
    wait_for(lambda: all(_listener(host, q).polls >= 1 for q in queues), "the listeners' first polls")


def test_queue_output_binding_wakes_the_hosts_listener_at_once_like_the_shared_queue_watcher(
    host: DevHost, storage: AzureStorage, env: dict[str, str],
) -> None:
    relay, sink = env["RELAY_QUEUE"], env["SINK_QUEUE"]
    _idle(host, relay, sink)
    answer = requests.post(f"{host.url}/api/relay", data=json.dumps({"copies": 2}), timeout=10)
    assert answer.status_code == 202
    got = wait_for(lambda: len(records(storage, env, "sink")) == 2 and records(storage, env, "sink"),
                   "both messages of the relay's output binding at the sink")
    [relayed] = records(storage, env, "relay")
    assert sorted(r["body"]["n"] for r in got) == [0, 1]
    assert {r["body"]["from"] for r in got} == {relayed["id"]}
    # both hops happened with the clock standing still: each listener was woken by the output
    # binding that wrote to its queue (without the watcher the sink would wait forever)


def test_queue_output_binding_is_written_only_when_the_function_succeeds_like_the_host(
    host: DevHost, storage: AzureStorage, env: dict[str, str],
) -> None:
    relay, sink = env["RELAY_QUEUE"], env["SINK_QUEUE"]
    _idle(host, relay, sink)
    body = json.dumps({"copies": 1, "fail": True})
    assert requests.post(f"{host.url}/api/relay", data=body, timeout=10).status_code == 202
    poisoned = wait_for(lambda: storage.peek(f"{relay}-poison"), "the failing relay message in poison")
    assert poisoned == [b64(body)]  # the HTTP function's output binding wrote the body as the message
    assert [r["dequeue_count"] for r in sorted(records(storage, env, "relay"), key=lambda r: r["dequeue_count"])] \
        == [1, 2, 3]  # it set its output every time, and failed every time
    assert storage.peek(sink) == [] and records(storage, env, "sink") == []
