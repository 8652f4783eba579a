"""Buffered prediction log: requests append in memory, a daemon thread writes JSON Lines blobs.

log() never does I/O on the caller's thread; it only appends a reference to the request's inputs and
outputs. A background thread flushes when flush_rows rows are buffered or flush_seconds have passed,
writing one blob per model per flush to `{model}/{YYYY-MM-DD}/{HHMMSS}-{uuid}.jsonl` through the
sink (which owns the container). Each line is one scored row:
{"request_id", "model", "version", "timestamp" (ISO 8601 UTC), "inputs": {column: value}, "outputs": {...}}.

Durability: rows live only in memory until flushed, so a crash loses at most the last flush_seconds
of predictions (or flush_rows rows, whichever comes first), plus any batch whose write was failing.
A failed write is kept (with its path, so a retry cannot duplicate it) and retried at the next flush;
beyond max_buffer_rows the oldest rows are dropped and counted in dropped_rows. Call close() on shutdown.
Sampling is per request: with sample_rate=0.1 about one request in ten is logged, with all its rows.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Sink = Callable[[str, bytes], None]
Inputs = Mapping[str, np.ndarray] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class _Record:
    model: str
    version: int
    request_id: str
    at: float
    inputs: Inputs
    outputs: Mapping[str, Any]
    rows: int


@dataclass(frozen=True)
class _Blob:
    path: str
    data: bytes
    rows: int


class PredictionLogger:
    """Collects scored rows in memory and writes them in batches from a background thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 5.0,
        sample_rate: float = 1.0,
        max_buffer_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._sample_rate = sample_rate
        self._max_rows = max_buffer_rows
        self._clock = clock
        self._rng = rng
        self._records: deque[_Record] = deque()
        self._failed: deque[_Blob] = deque()  # written before new records, oldest first
        self._rows = 0  # rows in _records + _failed
        self._dropped_unreported = 0
        self.dropped_rows = 0
        self._last_flush = clock()
        self._lock = threading.Lock()  # guards the buffers; never held during a sink call
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log-flush", daemon=True)
        self._thread.start()

    def log(
        self, model: str, version: int, request_id: str, inputs: Inputs, outputs: Mapping[str, Any]
    ) -> bool:
        """Buffer one scored request (inputs as name -> [N, 1] arrays or a list of row dicts); True if kept."""
        if self._closed or (self._sample_rate < 1.0 and self._rng() >= self._sample_rate):
            return False
        now = self._clock()
        rows = _row_count(inputs)
        # The caller must not mutate inputs/outputs afterwards; scoring builds fresh ones per request.
        record = _Record(model, version, request_id, now, inputs, outputs, rows)
        with self._lock:
            self._records.append(record)
            self._rows += rows
            self._drop_oldest_beyond_bound()
            due = self._rows >= self._flush_rows or now - self._last_flush >= self._flush_seconds
        if due:
            self._wake.set()
        return True

    def flush(self) -> int:
        """Write everything buffered now, on the caller's thread; returns rows written."""
        with self._flush_lock:
            with self._lock:
                failed, records = list(self._failed), list(self._records)
                self._failed.clear()
                self._records.clear()
                self._rows = 0
                self._last_flush = now = self._clock()
                dropped, self._dropped_unreported = self._dropped_unreported, 0
            if dropped:
                log.warning(
                    "prediction log dropped %d rows (total=%d); the sink is failing", dropped, self.dropped_rows
                )
            blobs = failed + self._serialise(records, now)
            return self._write(blobs)

    def close(self) -> None:
        """Stop the thread and flush what is left; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=max(self._flush_seconds, 1.0) + 5.0)
        self.flush()
        with self._lock:
            lost = self._rows
        if lost:
            log.error("prediction log closed with %d unwritten rows; the sink kept failing", lost)

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_seconds)
            # Clear before checking, so a log() that signals after this point is seen next round.
            self._wake.clear()
            if self._closed:
                return
            if self._due():
                try:
                    self.flush()
                except Exception:  # the thread must survive anything a sink or a record throws
                    log.exception("prediction log flush failed")

    def _due(self) -> bool:
        with self._lock:
            if not self._rows:
                return False
            return self._rows >= self._flush_rows or self._clock() - self._last_flush >= self._flush_seconds

    def _drop_oldest_beyond_bound(self) -> None:
        """Caller holds _lock. Failed blobs are older than buffered records, so they go first."""
        while self._rows > self._max_rows and (self._failed or len(self._records) > 1):
            rows = self._failed.popleft().rows if self._failed else self._records.popleft().rows
            self._rows -= rows
            self.dropped_rows += rows
            self._dropped_unreported += rows

    def _write(self, blobs: list[_Blob]) -> int:
        written = 0
        failed: list[_Blob] = []
        for blob in blobs:
            try:
                self._sink(blob.path, blob.data)
            except Exception:
                log.exception("prediction log write failed (path=%s, rows=%d); will retry", blob.path, blob.rows)
                failed.append(blob)
            else:
                written += blob.rows
        if failed:
            with self._lock:
                self._failed.extendleft(reversed(failed))
                self._rows += sum(b.rows for b in failed)
                self._drop_oldest_beyond_bound()
        return written

    def _serialise(self, records: list[_Record], now: float) -> list[_Blob]:
        by_model: dict[str, list[_Record]] = {}
        for record in records:
            by_model.setdefault(record.model, []).append(record)
        stamp = datetime.fromtimestamp(now, tz=UTC)
        blobs = []
        for model, group in by_model.items():
            path = f"{model}/{stamp:%Y-%m-%d}/{stamp:%H%M%S}-{uuid.uuid4().hex}.jsonl"
            lines = [line for record in group for line in _lines(record)]
            blobs.append(_Blob(path, ("\n".join(lines) + "\n").encode(), sum(r.rows for r in group)))
        return blobs


def _row_count(inputs: Inputs) -> int:
    if isinstance(inputs, Mapping):
        first = next(iter(inputs.values()), None)
        return 0 if first is None else len(first)
    return len(inputs)


def _lines(record: _Record) -> Iterable[str]:
    stamp = datetime.fromtimestamp(record.at, tz=UTC).isoformat(timespec="milliseconds")
    head = {"request_id": record.request_id, "model": record.model, "version": record.version, "timestamp": stamp}
    outputs = _output_rows(record.outputs, record.rows)
    # strict=False: a ragged record logs its common rows rather than failing the whole flush
    for inputs, out in zip(_input_rows(record.inputs), outputs, strict=False):
        yield json.dumps({**head, "inputs": inputs, "outputs": out}, default=str, allow_nan=False)


def _input_rows(inputs: Inputs) -> list[dict[str, Any]]:
    if not isinstance(inputs, Mapping):
        return [{k: _clean(v) for k, v in row.items()} for row in inputs]
    names = list(inputs)
    columns = [[_clean(v) for v in np.asarray(inputs[n]).reshape(-1).tolist()] for n in names]
    # strict=False on the columns for the same reason; each row then has exactly one value per name
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=False)]


def _output_rows(outputs: Mapping[str, Any], rows: int) -> list[dict[str, Any]]:
    """Per-row slices of every per-row output list (predictions, probabilities); scalars are left out."""
    per_row = {k: v for k, v in outputs.items() if isinstance(v, list) and len(v) == rows}
    return [{k: v[i] for k, v in per_row.items()} for i in range(rows)]


def _clean(value: Any) -> Any:
    """NaN -> None: strict JSON has no NaN, and a null input is what the client sent anyway."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
