"""MemoryStorage beyond the shared contract: the fault hook, the outage flag, expiry and test helpers."""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import ManualClock
from shared.errors import Conflict, StorageUnreachable
from shared.memory_storage import MESSAGE_TTL, MemoryStorage
from shared.storage import Storage


class Killed(BaseException):
    """Simulates kill -9: not an Exception, so no `except Exception` (or retry loop) swallows it."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def storage(clock: ManualClock) -> MemoryStorage:
    return MemoryStorage(clock=clock.now)


def _record(calls: list[tuple[str, str, str]]) -> Callable[[str, str, str], None]:
    return lambda op, where, what: calls.append((op, where, what))


def test_the_fault_hook_sees_every_operation_with_its_container_and_path(storage: MemoryStorage) -> None:
    calls: list[tuple[str, str, str]] = []
    storage.fault = _record(calls)
    storage.write("c", "a.json", b"{}")
    storage.read_json("c", "a.json")
    storage.update_json("c", "a.json", lambda cur: {"n": 1})
    storage.exists("c", "a.json")
    storage.list("c", "a")
    storage.delete("c", "a.json")
    storage.ping()
    assert calls == [
        ("write", "c", "a.json"), ("read", "c", "a.json"),
        ("read", "c", "a.json"), ("write", "c", "a.json"),  # update_json is a read then a write
        ("exists", "c", "a.json"), ("list", "c", "a"), ("delete", "c", "a.json"), ("ping", "", ""),
    ]


def test_the_fault_hook_sees_queue_operations_with_the_message_id(storage: MemoryStorage) -> None:
    calls: list[tuple[str, str, str]] = []
    storage.fault = _record(calls)
    first = storage.enqueue("q", {"a": 1})
    second = storage.enqueue_raw("q", "raw")
    m1, m2 = storage.receive("q", max_messages=2, visibility_timeout=30)
    renewed = storage.renew("q", m1, visibility_timeout=30)
    storage.release("q", m2, visibility_timeout=0)
    storage.delete_message("q", renewed)
    storage.peek("q")
    assert calls == [
        ("enqueue", "q", first), ("enqueue", "q", second), ("receive", "q", ""), ("renew", "q", first),
        ("release", "q", second), ("delete_message", "q", first), ("peek", "q", ""),
    ]


def test_a_fault_runs_before_the_operation_so_a_failed_write_changes_nothing(storage: MemoryStorage) -> None:
    etag = storage.write("c", "a", b"old")

    def fail_writes(op: str, where: str, what: str) -> None:
        if op == "write":
            raise StorageUnreachable("storage (endpoint=memory://blobs) is unreachable: injected")

    storage.fault = fail_writes
    with pytest.raises(StorageUnreachable, match="injected"):
        storage.write("c", "a", b"new")
    assert storage.read("c", "a").data == b"old"
    assert storage.read("c", "a").etag == etag


def test_a_kill_between_two_writes_leaves_the_first_and_not_the_second(storage: MemoryStorage) -> None:
    def kill_on_second_blob(op: str, where: str, what: str) -> None:
        if (op, what) == ("write", "second"):
            raise Killed

    storage.fault = kill_on_second_blob
    with pytest.raises(Killed):
        storage.write("c", "first", b"1")
        storage.write("c", "second", b"2")
    assert storage.blob_names("c") == ["first"]


def test_a_kill_inside_update_json_is_not_retried_like_a_conflict(storage: MemoryStorage) -> None:
    calls: list[tuple[str, str, str]] = []

    def kill_writes(op: str, where: str, what: str) -> None:
        calls.append((op, where, what))
        if op == "write":
            raise Killed

    storage.fault = kill_writes
    with pytest.raises(Killed):
        storage.update_json("c", "counter.json", lambda cur: {"n": 1})
    assert calls == [("read", "c", "counter.json"), ("write", "c", "counter.json")]
    assert storage.blob_names("c") == []


def test_a_failed_receive_does_not_dequeue(storage: MemoryStorage) -> None:
    storage.enqueue_raw("q", "job")

    def kill_receives(op: str, where: str, what: str) -> None:
        if op == "receive":
            raise Killed

    storage.fault = kill_receives
    with pytest.raises(Killed):
        storage.receive("q", max_messages=1, visibility_timeout=30)
    storage.fault = None
    [message] = storage.receive("q", max_messages=1, visibility_timeout=30)
    assert message.dequeue_count == 1


def test_a_fault_hook_may_itself_use_the_storage(storage: MemoryStorage) -> None:
    seen: list[bool] = []

    def peek_first(op: str, where: str, what: str) -> None:
        if op == "write":
            storage.fault = None  # one level deep only
            seen.append(storage.exists(where, what))
            storage.fault = peek_first

    storage.fault = peek_first
    storage.write("c", "a", b"1")
    storage.write("c", "a", b"2")
    assert seen == [False, True]


def _every_operation(storage: MemoryStorage) -> dict[str, Callable[[], Any]]:
    storage.write("c", "a.json", b"{}")
    storage.enqueue_raw("q", "one")
    storage.enqueue_raw("q", "two")
    one, two = storage.receive("q", max_messages=2, visibility_timeout=30)
    return {
        "read": lambda: storage.read("c", "a.json"),
        "read_json": lambda: storage.read_json("c", "a.json"),
        "open_read": lambda: storage.open_read("c", "a.json"),
        "write": lambda: storage.write("c", "b", b""),
        "write_chunks": lambda: storage.write_chunks("c", "b", iter([b"x", b"y"])),
        "write_json": lambda: storage.write_json("c", "b.json", {}),
        "create_json": lambda: storage.create_json("c", "b.json", {}),
        "update_json": lambda: storage.update_json("c", "a.json", lambda cur: cur),
        "exists": lambda: storage.exists("c", "a.json"),
        "list": lambda: storage.list("c"),
        "delete": lambda: storage.delete("c", "a.json"),
        "copy": lambda: storage.copy("c", "a.json", "c", "b.json"),
        "enqueue": lambda: storage.enqueue("q", {}),
        "enqueue_raw": lambda: storage.enqueue_raw("q", ""),
        "receive": lambda: storage.receive("q", max_messages=1, visibility_timeout=30),
        "delete_message": lambda: storage.delete_message("q", one),
        "release": lambda: storage.release("q", two, visibility_timeout=0),
        "renew": lambda: storage.renew("q", two, visibility_timeout=30),
        "peek": lambda: storage.peek("q"),
        "ping": storage.ping,
    }


def test_during_an_outage_every_operation_raises_storage_unreachable_naming_its_endpoint(
    storage: MemoryStorage,
) -> None:
    operations = _every_operation(storage)
    assert set(operations) == {name for name in dir(Storage) if not name.startswith("_")}
    storage.outage = True
    for name, operation in operations.items():
        with pytest.raises(StorageUnreachable, match=r"^storage \(endpoint=memory://(blobs|queues)\) is unreachable") \
                as info:
            operation()
        assert info.value.status == 503, name
        queue_op = name in {"enqueue", "enqueue_raw", "receive", "delete_message", "release", "renew", "peek"}
        assert ("memory://queues" in info.value.message) is queue_op, name


def test_after_an_outage_the_state_is_intact_and_operations_work_again(storage: MemoryStorage) -> None:
    etag = storage.write("c", "a", b"kept")
    storage.enqueue_raw("q", "kept")
    storage.outage = True
    with pytest.raises(StorageUnreachable):
        storage.write("c", "a", b"lost")
    storage.outage = False
    assert storage.read("c", "a").etag == etag
    assert storage.peek("q") == ["kept"]


def test_etags_are_unique_quoted_strings_across_blobs_and_containers(storage: MemoryStorage) -> None:
    etags = [storage.write("c1", "a", b"x"), storage.write("c2", "a", b"x"), storage.write("c1", "a", b"x")]
    assert etags == ['"0x1"', '"0x2"', '"0x3"']


def test_if_match_star_matches_any_existing_blob_but_not_a_missing_one(storage: MemoryStorage) -> None:
    storage.write("c", "a", b"1")
    storage.write("c", "a", b"2", if_match="*")
    assert storage.read("c", "a").data == b"2"
    with pytest.raises(Conflict):
        storage.write("c", "missing", b"1", if_match="*")


def test_concurrent_create_only_writes_let_exactly_one_win(storage: MemoryStorage) -> None:
    start = threading.Barrier(16)
    wins: list[bool] = []

    def create(n: int) -> None:
        start.wait(timeout=10)
        wins.append(storage.create_json("c", "version.json", {"by": n}))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(wins) == [False] * 15 + [True]


def test_blob_names_lists_under_a_prefix_in_name_order_without_the_fault_hook(storage: MemoryStorage) -> None:
    for name in ("b/2", "a/1", "b/1"):
        storage.write("c", name, b"")
    storage.outage = True  # helpers inspect state even during a simulated outage
    assert storage.blob_names("c") == ["a/1", "b/1", "b/2"]
    assert storage.blob_names("c", "b/") == ["b/1", "b/2"]
    assert storage.blob_names("missing") == []


def test_queue_texts_and_length_include_invisible_messages(storage: MemoryStorage) -> None:
    storage.enqueue_raw("q", "received")
    storage.receive("q", max_messages=1, visibility_timeout=30)
    storage.enqueue_raw("q", "delayed", delay_seconds=60)
    storage.enqueue_raw("q", "visible")
    assert storage.peek("q") == ["visible"]
    assert storage.queue_texts("q") == ["received", "delayed", "visible"]
    assert storage.queue_length("q") == 3
    assert storage.queue_length("other") == 0


def test_messages_expire_after_azures_default_time_to_live(storage: MemoryStorage, clock: ManualClock) -> None:
    storage.enqueue_raw("q", "old")
    clock.advance(MESSAGE_TTL.total_seconds() - 1)
    storage.enqueue_raw("q", "new")
    assert storage.queue_texts("q") == ["old", "new"]
    clock.advance(1)
    assert storage.queue_texts("q") == ["new"]
    assert storage.peek("q") == ["new"]


def test_received_messages_carry_insertion_expiry_and_visibility_times(
    storage: MemoryStorage, clock: ManualClock,
) -> None:
    inserted = clock.now()
    storage.enqueue_raw("q", "job")
    clock.advance(5)
    [message] = storage.receive("q", max_messages=1, visibility_timeout=30)
    assert message.insertion_time == inserted
    assert message.expiration_time == inserted + MESSAGE_TTL
    assert message.next_visible_on is not None
    assert (message.next_visible_on - inserted).total_seconds() == 35


@pytest.mark.parametrize("count", [0, 33])
def test_receive_and_peek_refuse_a_count_azure_would_refuse(storage: MemoryStorage, count: int) -> None:
    with pytest.raises(ValueError, match=f"max_messages={count} is out of range"):
        storage.receive("q", max_messages=count, visibility_timeout=30)
    with pytest.raises(ValueError, match=f"max_messages={count} is out of range"):
        storage.peek("q", max_messages=count)


def test_the_default_clock_is_timezone_aware_utc() -> None:
    storage = MemoryStorage()
    storage.write("c", "a", b"")
    [info] = storage.list("c")
    assert info.last_modified is not None and info.last_modified.tzinfo is not None
    assert abs((datetime.now(UTC) - info.last_modified).total_seconds()) < 60
