"""The Storage contract: every test runs against MemoryStorage and against AzureStorage over Azurite.

Time: each backend has `advance(seconds, until)`. In memory it moves a fake clock and evaluates
`until` once; over Azurite real time has to pass, so it polls `until` with a deadline.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from devhost.azurite import Azurite
from shared.clock import ManualClock
from shared.errors import Conflict, NotFound
from shared.memory_storage import MemoryStorage
from shared.settings import Settings
from shared.storage import AzureStorage, Blob, QueuedMessage, Storage

T = TypeVar("T")

# Azurite's visibility has one-second granularity; generous so a loaded CI machine does not flake.
AZURITE_SLACK_SECONDS = 15.0
POLL_SECONDS = 0.05


class Backend(Protocol):
    """A Storage plus a way to let time pass."""

    name: str
    storage: Storage

    def advance(self, seconds: float, until: Callable[[], T]) -> T:
        """Let `seconds` pass, then return until()'s result (the first truthy one, within a deadline)."""
        ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.storage: Storage = MemoryStorage(clock=self.clock.now)

    def advance(self, seconds: float, until: Callable[[], T]) -> T:
        self.clock.advance(seconds)
        return until()


class AzuriteBackend:
    name = "azurite"

    def __init__(self, storage: AzureStorage) -> None:
        self.storage: Storage = storage  # also checks, for mypy, that AzureStorage satisfies Storage

    def advance(self, seconds: float, until: Callable[[], T]) -> T:
        deadline = time.monotonic() + seconds + AZURITE_SLACK_SECONDS
        while True:
            result = until()
            if result or time.monotonic() > deadline:
                return result
            time.sleep(POLL_SECONDS)  # polling with a deadline, not a synchronisation sleep


@pytest.fixture(params=["memory", "azurite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn; the session's Azurite only starts when an Azurite test runs."""
    if request.param == "memory":
        return MemoryBackend()
    # built from `azurite` rather than conftest's `storage`, which this module's `storage` shadows
    azurite: Azurite = request.getfixturevalue("azurite")
    env = {"AzureWebJobsStorage": azurite.connection_string}
    return AzuriteBackend(AzureStorage.from_settings(Settings.from_env(env)))


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage


@pytest.fixture
def container(unique: str) -> str:
    return f"contract-{unique}"


@pytest.fixture
def queue(unique: str) -> str:
    return f"contract-{unique}"


def _receive_one(storage: Storage, queue: str, visibility_timeout: int = 30) -> QueuedMessage:
    [message] = storage.receive(queue, max_messages=1, visibility_timeout=visibility_timeout)
    return message


def _receive_all(storage: Storage, queue: str) -> Callable[[], list[QueuedMessage]]:
    return lambda: storage.receive(queue, max_messages=32, visibility_timeout=30)


# -- blobs -----------------------------------------------------------------------------------


def test_both_backends_satisfy_the_storage_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


def test_a_written_blob_reads_back_with_the_etag_the_write_returned(storage: Storage, container: str) -> None:
    etag = storage.write(container, "a.bin", b"hello")
    blob = storage.read(container, "a.bin")
    assert (blob.data, blob.etag) == (b"hello", etag)


def test_every_write_gives_the_blob_a_new_etag(storage: Storage, container: str) -> None:
    first = storage.write(container, "a.bin", b"1")
    second = storage.write(container, "a.bin", b"2")
    assert first != second
    assert storage.read(container, "a.bin").etag == second


def test_reading_a_missing_blob_raises_not_found_naming_the_container_and_path(
    storage: Storage, container: str,
) -> None:
    storage.write(container, "present", b"x")
    with pytest.raises(NotFound, match=rf"^blob \(container={container}, path=dir/missing\) not found$") as info:
        storage.read(container, "dir/missing")
    assert info.value.status == 404


def test_open_read_streams_the_blob_in_ranges_with_seek_and_the_read_etag(storage: Storage, container: str) -> None:
    data = bytes(range(256)) * 40
    etag = storage.write(container, "big.bin", data)
    stream = storage.open_read(container, "big.bin")
    assert (stream.etag, stream.size, stream.seekable()) == (etag, len(data), True)
    assert stream.read(100) == data[:100]
    assert stream.read(50) == data[100:150]
    stream.seek(-10, io.SEEK_END)
    assert (stream.tell(), stream.read()) == (len(data) - 10, data[-10:])
    assert stream.read(5) == b""  # at the end
    stream.seek(0)
    with io.BufferedReader(stream, buffer_size=1000) as buffered:
        assert buffered.read() == data
    assert stream.closed and stream.reopen().read(3) == data[:3]  # closing the reader closed the stream


def test_read_range_gives_a_range_whole_wherever_the_stream_is_and_less_at_the_end(
    storage: Storage, container: str,
) -> None:
    data = bytes(range(256)) * 40
    storage.write(container, "ranges.bin", data)
    stream = storage.open_read(container, "ranges.bin")
    stream.seek(7)
    assert bytes(stream.read_range(1000, 3000)) == data[1000:4000]
    assert bytes(stream.read_range(len(data) - 10, 3000)) == data[-10:]
    assert stream.read_range(len(data), 100) == b"" and stream.tell() == 7  # the position is not the range's
    storage.write(container, "ranges.bin", b"overwritten")
    with pytest.raises(Conflict):
        stream.read_range(0, 100)


def test_open_read_of_a_missing_blob_raises_not_found(storage: Storage, container: str) -> None:
    with pytest.raises(NotFound, match=rf"^blob \(container={container}, path=nope\) not found$"):
        storage.open_read(container, "nope")


def test_a_stream_refuses_to_read_on_once_the_blob_is_overwritten(storage: Storage, container: str) -> None:
    storage.write(container, "v.bin", b"first version")
    stream = storage.open_read(container, "v.bin")
    assert stream.read(5) == b"first"
    storage.write(container, "v.bin", b"second version")
    with pytest.raises(Conflict):
        stream.read(5)


def test_reading_from_a_missing_container_raises_not_found(storage: Storage, container: str) -> None:
    with pytest.raises(NotFound, match=f"container={container}, path=a.json"):
        storage.read_json(container, "a.json")


def test_read_json_returns_the_value_written_and_its_etag(storage: Storage, container: str) -> None:
    etag = storage.write_json(container, "a.json", {"b": [1, 2], "a": "x"})
    assert storage.read_json(container, "a.json") == ({"a": "x", "b": [1, 2]}, etag)


def test_create_only_refuses_to_overwrite_an_existing_blob(storage: Storage, container: str) -> None:
    assert storage.create_json(container, "v1.json", {"n": 1}) is True
    assert storage.create_json(container, "v1.json", {"n": 2}) is False
    with pytest.raises(Conflict, match=f"container={container}, path=v1.json"):
        storage.write(container, "v1.json", b"{}", create_only=True)
    assert storage.read_json(container, "v1.json")[0] == {"n": 1}


def test_a_write_with_the_current_etag_replaces_the_blob(storage: Storage, container: str) -> None:
    etag = storage.write_json(container, "alias.json", {"v": 1})
    new_etag = storage.write_json(container, "alias.json", {"v": 2}, if_match=etag)
    assert storage.read_json(container, "alias.json") == ({"v": 2}, new_etag)


def test_a_write_with_a_stale_etag_is_a_conflict_and_the_winner_keeps_its_value(
    storage: Storage, container: str,
) -> None:
    stale = storage.write_json(container, "alias.json", {"v": 1})
    winner = storage.write_json(container, "alias.json", {"v": 2}, if_match=stale)
    with pytest.raises(Conflict, match=f"container={container}, path=alias.json") as info:
        storage.write_json(container, "alias.json", {"v": 3}, if_match=stale)
    assert info.value.status == 409
    assert storage.read_json(container, "alias.json") == ({"v": 2}, winner)


def test_if_match_on_a_missing_blob_is_a_conflict_and_creates_nothing(storage: Storage, container: str) -> None:
    etag = storage.write(container, "elsewhere", b"x")  # a real ETag, of another blob
    with pytest.raises(Conflict, match="path=missing.json"):
        storage.write_json(container, "missing.json", {"v": 1}, if_match=etag)
    assert storage.exists(container, "missing.json") is False


def test_update_json_creates_the_blob_when_absent(storage: Storage, container: str) -> None:
    seen: list[Any] = []

    def change(current: Any) -> dict[str, int]:
        seen.append(current)
        return {"n": 1}

    assert storage.update_json(container, "counter.json", change) == {"n": 1}
    assert seen == [None]
    assert storage.read_json(container, "counter.json")[0] == {"n": 1}


def test_update_json_passes_the_current_value_and_stores_the_result(storage: Storage, container: str) -> None:
    storage.write_json(container, "counter.json", {"n": 41, "name": "churn"})

    def bump(current: Any) -> dict[str, Any]:
        return {**current, "n": current["n"] + 1}

    result = storage.update_json(container, "counter.json", bump)
    assert result == {"n": 42, "name": "churn"}
    assert storage.read_json(container, "counter.json")[0] == {"n": 42, "name": "churn"}


def test_update_json_writes_nothing_when_the_change_keeps_the_current_value(storage: Storage, container: str) -> None:
    etag = storage.write_json(container, "same.json", {"n": 1})
    assert storage.update_json(container, "same.json", lambda current: current) == {"n": 1}
    assert storage.read(container, "same.json").etag == etag


@pytest.mark.parametrize("exists_before", [False, True], ids=["absent", "present"])
def test_concurrent_update_json_calls_lose_no_increment(
    storage: Storage, container: str, exists_before: bool,
) -> None:
    threads_count = 8
    if exists_before:
        storage.write_json(container, "counter.json", {"n": 0})
    # every thread reads before any writes, so all but one lose their first race and must retry
    everyone_has_read = threading.Barrier(threads_count)
    calls = 0
    calls_lock = threading.Lock()
    errors: list[BaseException] = []

    def increment(current: Any) -> dict[str, int]:
        nonlocal calls
        with calls_lock:
            calls += 1
            first_round = calls <= threads_count
        if first_round:
            everyone_has_read.wait(timeout=30)
        return {"n": (current or {"n": 0})["n"] + 1}

    def run() -> None:
        try:
            storage.update_json(container, "counter.json", increment)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert storage.read_json(container, "counter.json")[0] == {"n": threads_count}
    assert calls > threads_count  # the races really happened and were retried


def test_exists_tells_whether_a_blob_is_there(storage: Storage, container: str) -> None:
    storage.write(container, "here", b"x")
    assert storage.exists(container, "here") is True
    assert storage.exists(container, "not-here") is False
    assert storage.exists(f"{container}-none", "here") is False


def test_list_returns_names_sizes_and_etags_under_a_prefix_in_name_order(storage: Storage, container: str) -> None:
    etags = {name: storage.write(container, f"runs/{name}", b"x" * size)
             for name, size in (("c", 3), ("a", 1), ("b/nested", 2))}
    storage.write(container, "other/a", b"x")
    storage.write(container, "runs", b"x")  # the prefix without its slash is not under it
    listed = storage.list(container, "runs/")
    assert [(i.container, i.name, i.size, i.etag) for i in listed] == [
        (container, "runs/a", 1, etags["a"]),
        (container, "runs/b/nested", 2, etags["b/nested"]),
        (container, "runs/c", 3, etags["c"]),
    ]
    assert [i.name for i in storage.list(container)] == ["other/a", "runs", "runs/a", "runs/b/nested", "runs/c"]


def test_list_gives_names_as_written_and_when_each_blob_last_changed(storage: Storage, container: str) -> None:
    names = ["runs/a b.json", "runs/caf\u00e9%20&<x>.json", "runs/\u6a21\u578b+1.json"]
    etags = {name: storage.write(container, name, b"{}") for name in names}
    listed = storage.list(container, "runs/")
    assert [(i.name, i.etag) for i in listed] == sorted(etags.items())
    assert all(i.last_modified is not None and i.last_modified.utcoffset() is not None for i in listed)
    assert [storage.read(container, i.name).etag for i in listed] == [i.etag for i in listed]


def test_list_of_a_missing_container_is_empty(storage: Storage, container: str) -> None:
    assert storage.list(f"{container}-none") == []
    assert storage.list(f"{container}-none", "a/") == []


def test_deleting_a_blob_removes_it_and_returns_true(storage: Storage, container: str) -> None:
    storage.write(container, "gone", b"x")
    storage.write(container, "kept", b"x")
    assert storage.delete(container, "gone") is True
    assert storage.exists(container, "gone") is False
    assert [i.name for i in storage.list(container)] == ["kept"]
    with pytest.raises(NotFound):
        storage.read(container, "gone")


def test_deleting_a_missing_blob_returns_false(storage: Storage, container: str) -> None:
    storage.write(container, "other", b"x")
    assert storage.delete(container, "missing") is False
    assert storage.delete(f"{container}-none", "missing") is False


def test_deleting_with_the_current_etag_removes_it(storage: Storage, container: str) -> None:
    etag = storage.write(container, "lease", b"x")
    assert storage.delete(container, "lease", if_match=etag) is True
    assert storage.exists(container, "lease") is False


def test_deleting_with_a_stale_etag_is_a_conflict_and_keeps_the_blob(storage: Storage, container: str) -> None:
    stale = storage.write(container, "lease", b"old")
    storage.write(container, "lease", b"new")
    with pytest.raises(Conflict, match=f"container={container}, path=lease"):
        storage.delete(container, "lease", if_match=stale)
    assert storage.read(container, "lease").data == b"new"


def test_deleting_a_missing_blob_with_if_match_is_a_conflict_like_azure_412(storage: Storage, container: str) -> None:
    etag = storage.write(container, "lease", b"x")
    storage.delete(container, "lease")
    with pytest.raises(Conflict, match="path=lease"):
        storage.delete(container, "lease", if_match=etag)


# -- queues ----------------------------------------------------------------------------------


def test_enqueue_stores_base64_json_that_the_queue_trigger_decodes(storage: Storage, queue: str) -> None:
    message_id = storage.enqueue(queue, {"run": 1, "model": "churn"})
    message = _receive_one(storage, queue)
    assert message.id == message_id
    assert json.loads(base64.b64decode(message.content)) == {"run": 1, "model": "churn"}
    assert message.dequeue_count == 1


def test_enqueue_raw_stores_the_text_exactly_as_given(storage: Storage, queue: str) -> None:
    storage.enqueue_raw(queue, "not base64 {at all}")
    assert _receive_one(storage, queue).content == "not base64 {at all}"


def test_receiving_from_an_empty_or_unknown_queue_returns_nothing(storage: Storage, queue: str) -> None:
    assert storage.receive(queue, max_messages=32, visibility_timeout=30) == []


def test_receive_returns_at_most_max_messages_in_insertion_order(storage: Storage, queue: str) -> None:
    for text in ("one", "two", "three"):
        storage.enqueue_raw(queue, text)
    first = storage.receive(queue, max_messages=2, visibility_timeout=30)
    rest = storage.receive(queue, max_messages=2, visibility_timeout=30)
    assert [m.content for m in first] == ["one", "two"]
    assert [m.content for m in rest] == ["three"]


def test_a_released_message_comes_back_with_its_dequeue_count_incremented(storage: Storage, queue: str) -> None:
    storage.enqueue(queue, {"run": 1})
    first = _receive_one(storage, queue)
    storage.release(queue, first, visibility_timeout=0)
    second = _receive_one(storage, queue)
    assert (second.id, second.content) == (first.id, first.content)
    assert (first.dequeue_count, second.dequeue_count) == (1, 2)
    assert second.pop_receipt != first.pop_receipt


def test_a_received_message_is_invisible_until_its_visibility_timeout_passes(
    backend: Backend, storage: Storage, queue: str,
) -> None:
    storage.enqueue_raw(queue, "job")
    received = _receive_one(storage, queue, visibility_timeout=1)
    assert storage.receive(queue, max_messages=32, visibility_timeout=30) == []
    assert storage.peek(queue) == []
    again = backend.advance(1, until=_receive_all(storage, queue))
    assert [(m.id, m.dequeue_count) for m in again] == [(received.id, 2)]


def test_renew_extends_invisibility_and_replaces_the_pop_receipt(
    backend: Backend, storage: Storage, queue: str,
) -> None:
    storage.enqueue_raw(queue, "long job")
    storage.enqueue_raw(queue, "marker")  # received with the same 1 s timeout but never renewed
    job, marker = storage.receive(queue, max_messages=2, visibility_timeout=1)
    renewed = storage.renew(queue, job, visibility_timeout=60)
    assert renewed.pop_receipt != job.pop_receipt
    assert (renewed.id, renewed.content, renewed.dequeue_count) == (job.id, job.content, job.dequeue_count)
    assert renewed.next_visible_on is not None and job.next_visible_on is not None
    assert renewed.next_visible_on > job.next_visible_on
    # once the marker is back, the job's original timeout has passed too: the renewal keeps it hidden
    back = backend.advance(1, until=_receive_all(storage, queue))
    assert [m.id for m in back] == [marker.id]
    with pytest.raises(NotFound, match=f"queue={queue}, id={job.id}"):
        storage.delete_message(queue, job)
    storage.delete_message(queue, renewed)


def test_a_stale_pop_receipt_no_longer_deletes_releases_or_renews(storage: Storage, queue: str) -> None:
    storage.enqueue_raw(queue, "job")
    first = _receive_one(storage, queue)
    storage.release(queue, first, visibility_timeout=0)
    second = _receive_one(storage, queue)
    for attempt in (
        lambda: storage.delete_message(queue, first),
        lambda: storage.release(queue, first, visibility_timeout=0),
        lambda: storage.renew(queue, first, visibility_timeout=30),
    ):
        with pytest.raises(NotFound, match=rf"^message \(queue={queue}, id={first.id}\) not found") as info:
            attempt()
        assert info.value.status == 404
    storage.delete_message(queue, second)  # the current receipt still works


def test_a_pop_receipt_still_deletes_after_the_visibility_timeout_if_nobody_received_it_again(
    backend: Backend, storage: Storage, queue: str,
) -> None:
    storage.enqueue_raw(queue, "job")
    message = _receive_one(storage, queue, visibility_timeout=1)
    backend.advance(1, until=lambda: storage.peek(queue))
    storage.delete_message(queue, message)
    assert storage.peek(queue) == []


def test_delete_message_removes_it_for_good(backend: Backend, storage: Storage, queue: str) -> None:
    storage.enqueue_raw(queue, "done")
    message = _receive_one(storage, queue, visibility_timeout=1)
    storage.delete_message(queue, message)
    storage.enqueue_raw(queue, "marker", delay_seconds=1)
    back = backend.advance(1, until=_receive_all(storage, queue))
    assert [m.content for m in back] == ["marker"]
    with pytest.raises(NotFound, match=f"id={message.id}"):
        storage.delete_message(queue, message)


def test_a_delayed_message_is_invisible_until_the_delay_passes(
    backend: Backend, storage: Storage, queue: str,
) -> None:
    message_id = storage.enqueue(queue, {"retry": 1}, delay_seconds=1)
    assert storage.receive(queue, max_messages=32, visibility_timeout=30) == []
    assert storage.peek(queue) == []
    back = backend.advance(1, until=_receive_all(storage, queue))
    assert [(m.id, m.dequeue_count) for m in back] == [(message_id, 1)]


def test_peek_shows_visible_texts_without_dequeuing(storage: Storage, queue: str) -> None:
    storage.enqueue_raw(queue, "a")
    storage.enqueue(queue, {"b": 2})
    expected = ["a", base64.b64encode(b'{"b": 2}').decode("ascii")]
    assert storage.peek(queue) == expected
    assert storage.peek(queue) == expected
    assert storage.peek(queue, max_messages=1) == ["a"]
    assert [m.dequeue_count for m in storage.receive(queue, max_messages=32, visibility_timeout=30)] == [1, 1]


def test_ping_succeeds_when_storage_answers(storage: Storage) -> None:
    storage.ping()
    assert storage.blob_endpoint and storage.queue_endpoint


def test_write_chunks_gives_the_blob_the_chunks_joined_and_a_new_etag(storage: Storage, container: str) -> None:
    old = storage.write(container, "chunks/a.csv", b"old")
    chunks = [b"x" * 3_000_000, b"", b"y" * 5_000_000, b"tail"]  # more than one Azure block
    etag = storage.write_chunks(container, "chunks/a.csv", iter(chunks), content_type="text/csv")
    blob = storage.read(container, "chunks/a.csv")
    assert blob.data == b"".join(chunks) and blob.etag == etag != old


def test_write_chunks_of_no_bytes_gives_an_empty_blob(storage: Storage, container: str) -> None:
    storage.write(container, "chunks/empty.csv", b"old")
    etag = storage.write_chunks(container, "chunks/empty.csv", iter([b"", b""]))
    assert storage.read(container, "chunks/empty.csv") == Blob(b"", etag)


def test_write_chunks_whose_chunks_fail_leaves_the_blob_as_it_was(storage: Storage, container: str) -> None:
    before = storage.write(container, "chunks/b.csv", b"before")

    def failing() -> Iterator[bytes]:
        yield b"z" * 5_000_000
        raise RuntimeError("the file was rejected half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        storage.write_chunks(container, "chunks/b.csv", failing())
    assert storage.read(container, "chunks/b.csv") == Blob(b"before", before)
    with pytest.raises(RuntimeError):
        storage.write_chunks(container, "chunks/new.csv", failing())
    assert not storage.exists(container, "chunks/new.csv")


def test_copy_gives_the_same_bytes_under_the_new_name_and_leaves_the_source_as_it_was(
    storage: Storage, container: str,
) -> None:
    data = bytes(range(256)) * 40
    source = "runs/caf\u00e9 1/model.bin"  # a name the source URL has to encode
    source_etag = storage.write(container, source, data)
    etag = storage.copy(container, source, container, "copies/model.bin")
    assert storage.read(container, "copies/model.bin") == Blob(data, etag)
    assert storage.read(container, source) == Blob(data, source_etag)
    assert etag != source_etag


def test_copy_overwrites_an_existing_destination(storage: Storage, container: str) -> None:
    storage.write(container, "src", b"new content")
    old = storage.write(container, "dst", b"old content, longer than the new")
    etag = storage.copy(container, "src", container, "dst")
    assert storage.read(container, "dst") == Blob(b"new content", etag)
    assert etag != old


def test_copy_into_a_container_that_does_not_exist_yet_creates_it(storage: Storage, container: str) -> None:
    storage.write(container, "src", b"x")
    to_container = f"{container}-new"
    assert storage.list(to_container) == []
    etag = storage.copy(container, "src", to_container, "a/dst")
    assert storage.read(to_container, "a/dst") == Blob(b"x", etag)
    assert [(i.name, i.etag) for i in storage.list(to_container)] == [("a/dst", etag)]


def test_copy_with_the_source_current_etag_copies(storage: Storage, container: str) -> None:
    current = storage.write(container, "src", b"v1")
    etag = storage.copy(container, "src", container, "dst", if_match=current)
    assert storage.read(container, "dst") == Blob(b"v1", etag)


@pytest.mark.parametrize("destination_before", [None, b"kept"], ids=["absent", "present"])
def test_copy_with_a_stale_source_etag_is_a_conflict_and_leaves_the_destination_as_it_was(
    storage: Storage, container: str, destination_before: bytes | None,
) -> None:
    stale = storage.write(container, "src", b"v1")
    storage.write(container, "src", b"v2")
    before = None if destination_before is None else storage.write(container, "dst", destination_before)
    with pytest.raises(Conflict, match=rf"^blob \(container={container}, path=src\) was changed") as info:
        storage.copy(container, "src", container, "dst", if_match=stale)
    assert info.value.status == 409
    if before is None:
        assert storage.exists(container, "dst") is False
    else:
        assert storage.read(container, "dst") == Blob(b"kept", before)


def test_copying_a_missing_source_raises_not_found_and_creates_nothing(storage: Storage, container: str) -> None:
    storage.write(container, "other", b"x")
    with pytest.raises(NotFound, match=rf"^blob \(container={container}, path=missing\) not found$") as info:
        storage.copy(container, "missing", container, "dst")
    assert info.value.status == 404
    with pytest.raises(NotFound, match=rf"^blob \(container={container}-none, path=missing\) not found$"):
        storage.copy(f"{container}-none", "missing", container, "dst")
    assert storage.exists(container, "dst") is False
