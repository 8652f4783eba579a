"""devhost's batched console: the same lines as logging's StreamHandler, in order, written within the interval."""
from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import TypeAlias

import pytest

from devhost.console import FORMAT, BatchedConsoleHandler

Console: TypeAlias = tuple[logging.Logger, io.StringIO, BatchedConsoleHandler]


@pytest.fixture
def console() -> Iterator[Console]:
    stream = io.StringIO()
    handler = BatchedConsoleHandler(stream, flush_seconds=0.05)
    logger = logging.getLogger(f"test-console-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)
    handler.close()


def wait_for_text(stream: io.StringIO, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, f"{text!r} not written within {timeout}s: {stream.getvalue()!r}"
        time.sleep(0.01)  # polling under a deadline
    return stream.getvalue()


def test_lines_are_written_in_order_as_a_stream_handler_formats_them(console: Console) -> None:
    logger, stream, _ = console
    records: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(capture)
    for i in range(200):
        logger.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", "score", f"id-{i}", i * 0.5)
    written = wait_for_text(stream, "Id=id-199,")
    reference = logging.Formatter(FORMAT)
    assert written == "".join(reference.format(r) + "\n" for r in records)


def test_a_warning_is_written_at_once_with_the_lines_before_it(console: Console) -> None:
    logger, stream, _ = console
    logger.info("first")
    logger.warning("second")  # no wait: a warning is written before warning() returns
    assert [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()] == ["first", "second"]


def test_a_record_with_mutable_arguments_is_formatted_when_logged(console: Console) -> None:
    logger, stream, _ = console
    items = ["a"]
    logger.info("items %s", items)
    items.append("b")
    assert "items ['a']\n" in wait_for_text(stream, "items [")


def test_lines_logged_after_close_are_still_written(console: Console) -> None:
    logger, stream, handler = console
    handler.close()  # what logging.config.dictConfig does to the handlers it replaces
    logger.info("after close")
    assert stream.getvalue().endswith("] after close\n")


def test_a_flush_that_interrupts_a_flush_on_the_same_thread_does_not_hang() -> None:
    """devhost's second-Ctrl-C handler flushes on the main thread, which may be inside a flush (a warning)."""

    class Reentering(io.StringIO):
        handler: BatchedConsoleHandler | None = None

        def write(self, text: str) -> int:
            handler, self.handler = self.handler, None
            if handler is not None:
                handler.flush()  # what the signal handler does, mid-write
            return super().write(text)

    stream = Reentering()
    handler = BatchedConsoleHandler(stream, flush_seconds=60)
    logger = logging.getLogger(f"test-console-reentry-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    done = threading.Event()
    try:
        stream.handler = handler
        worker = threading.Thread(target=lambda: (logger.warning("stop"), done.set()), daemon=True)
        worker.start()
        assert done.wait(5), "the nested flush waited for the lock its own thread held"
        assert stream.getvalue().endswith("] stop\n")
    finally:
        logger.removeHandler(handler)
        if done.is_set():  # else its lock is held for good by the stuck thread
            handler.close()
