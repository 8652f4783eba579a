"""The local host's console: log lines written in batches, a few times a second, instead of one write per line.

Every HTTP request logs the host's two Executing/Executed lines. Formatted, written and flushed one at a time
they cost ~50 µs of a ~240 µs single-row scoring call in process here (a write syscall per line, the
timestamp rebuilt per line, and the caches the next request then starts cold from); batched, ~17 µs. .NET's
console logger, which the Functions host logs through, also writes from a queue on a background thread.

Warnings and errors are written at once (with everything before them); other lines wait at most
FLUSH_SECONDS. A record whose arguments are plain str/int/float (the host's own lines) is formatted when it is
written, off the request's path; any other record is formatted at once, as its arguments could still change.
Everything pending is written when logging shuts down; a kill -9 loses at most FLUSH_SECONDS of lines.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TextIO

FLUSH_SECONDS = 0.1
FORMAT = "[%(asctime)s] %(message)s"


class CachedTimeFormatter(logging.Formatter):
    """logging.Formatter's default asctime (`2026-11-24 16:30:01,123`), its date and time rebuilt once a second."""

    _cache: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._cache
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._cache = (second, text)  # one tuple: a thread reading it never sees a second with another's text
        return f"{text},{int(record.msecs):03d}"


class BatchedConsoleHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines wait (at most FLUSH_SECONDS) to be written together, in order."""

    def __init__(self, stream: TextIO, flush_seconds: float = FLUSH_SECONDS) -> None:
        super().__init__(stream)
        self.setFormatter(CachedTimeFormatter(FORMAT))
        self._pending: deque[str | logging.LogRecord] = deque()  # append and popleft are atomic: emit takes no lock
        # one writer at a time keeps the lines in order; reentrant because devhost's second-Ctrl-C handler flushes
        # on the main thread, which the signal may have interrupted inside a flush of its own (a warning)
        self._writing = threading.RLock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._flush_seconds = flush_seconds
        self._thread = threading.Thread(target=self._run, name="devhost-console", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if _immutable(record.args) and not record.exc_info and record.stack_info is None:
            self._pending.append(record)  # formatted when written: its text cannot change meanwhile
        else:
            line = self._line(record)
            if line is None:
                return
            self._pending.append(line)
        if record.levelno >= logging.WARNING or self._stopping.is_set():  # closed: no thread writes it later
            self.flush()
        elif not self._ready.is_set():  # set already: the thread has yet to write, this line goes with the others
            self._ready.set()

    def flush(self) -> None:
        with self._writing:
            lines = []
            while True:
                try:
                    item = self._pending.popleft()
                except IndexError:
                    break
                line = item if isinstance(item, str) else self._line(item)
                if line is not None:
                    lines.append(line)
            if lines and self.stream is not None:
                self.stream.write("".join(lines))
            if self.stream is not None and hasattr(self.stream, "flush"):
                self.stream.flush()

    def _line(self, record: logging.LogRecord) -> str | None:
        try:
            return self.format(record) + self.terminator
        except Exception:  # logging's contract: a bad record is reported, never raised
            self.handleError(record)
            return None

    def close(self) -> None:
        self._stopping.set()
        self._ready.set()
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._ready.wait()
            self._stopping.wait(self._flush_seconds)  # lines logged meanwhile go out in the same write
            self._ready.clear()
            try:
                self.flush()
            except (OSError, ValueError):  # a console that went away (closed, broken pipe) must not end the thread
                pass


def _immutable(args: object) -> bool:
    """A record's arguments that cannot change before it is formatted: str, int, float (the host's own lines)."""
    return args is None or (isinstance(args, tuple) and all(type(a) in _IMMUTABLE for a in args))


_IMMUTABLE = frozenset({str, int, float, bool})
