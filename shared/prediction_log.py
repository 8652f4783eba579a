"""Buffered prediction log: requests append in memory, a daemon thread writes JSON Lines blobs (and segments).

log() never does I/O on the caller's thread; it only appends a reference to the request's inputs,
outputs and prediction ids. A background thread flushes when flush_rows rows are buffered or
flush_seconds have passed, writing one blob per model per flush to
`{model}/{YYYY-MM-DD}/{HHMMSS}-{uuid}.jsonl` through the sink (which owns the container). A blob is
ASCII JSON Lines (json.dumps escapes anything else), every line ended by a newline; the rows of one
request are consecutive lines of one blob, in row order. Each line is one scored row with exactly
these keys, in this order:

    {"request_id": str,      # the request's id: its x-request-id header, or a uuid4 the app made
     "prediction_id": str,   # this row's id, as answered in "prediction_ids": the client's own
                             # (x-prediction-ids or params.ids) or "<request_id>-<row>", row from 0;
                             # always fits shared.names.PREDICTION_ID, unique within its request
     "model": str,           # the model name
     "version": int,         # the model version that scored the row
     "timestamp": str,       # when the request was scored, ISO 8601 UTC with milliseconds and an
                             # explicit offset: "2023-11-14T22:13:20.000+00:00" (same for every row)
     "inputs": {feature: value or null},  # every model input, as the model saw it: a number for a
                             # numeric input (float32 inputs carry float32 rounding), null where the
                             # client sent null or an empty CSV cell; a string for a categorical input
                             # (a missing category is already the model's marker, e.g. "missing")
     "outputs": {"predictions": value,    # a class label (str or int) or a regression float (null for NaN)
                 "probabilities": {class: p}}}  # classifiers only: class label as str -> float

A request of SEGMENT_ROWS rows or more goes into a columnar segment instead: a Parquet blob with the same
fields, named the same way but ending `-<n>.parquet` (shared.prediction_segments, which reads both formats
into these line dicts: blob_rows), at less than half the CPU and a quarter of the bytes. A batch-scored file's
rows are a manifest's (FILE_SUFFIX: copies of the file and its results, shared.batch_scoring). Readers of the
log tell the formats apart by the name's suffix.

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
import operator
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, cast, overload

import numpy as np
from orjson import OPT_SERIALIZE_NUMPY, dumps

log = logging.getLogger(__name__)

Sink = Callable[[str, bytes], None]
Inputs = Mapping[str, np.ndarray] | Sequence[Mapping[str, Any]]

LINES_SUFFIX = ".jsonl"
SEGMENT_SUFFIX = ".parquet"  # a columnar segment's blob (shared.prediction_segments, which needs pyarrow)
FILE_SUFFIX = ".file.json"  # a batch-scored file's manifest: its rows are copies of the file and its results
_OUTPUT_KEYS = ("predictions", "probabilities")  # what a line's "outputs" holds; prediction_ids has its own key


def default_prediction_ids(request_id: str, rows: int, start: int = 0) -> list[str]:
    """The ids of a request that sent none: '<request_id>-<row>' for rows start..start+rows-1."""
    return [f"{request_id}-{row}" for row in range(start, start + rows)]  # faster than map(str.__add__, ...) on 3.11


class DefaultIds(Sequence[str]):
    """default_prediction_ids as a sequence that makes an id only when it is read.

    A big request's ids cost ~0.1 µs each as Python strings: a CSV or Arrow answer builds the column in
    Arrow instead (shared.arrow_bodies.id_column) and the prediction log writes them on its own thread, so
    they are never made on the request's path. Equal to any sequence of the same ids.
    """

    __slots__ = ("request_id", "rows", "start")

    def __init__(self, request_id: str, rows: int, start: int = 0) -> None:
        self.request_id, self.rows, self.start = request_id, rows, start

    def __len__(self) -> int:
        return self.rows

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [f"{self.request_id}-{self.start + i}" for i in range(*index.indices(self.rows))]
        i = operator.index(index)
        if not -self.rows <= i < self.rows:
            raise IndexError(f"id {i} of {self.rows}")
        return f"{self.request_id}-{self.start + i % self.rows}"

    def __iter__(self) -> Iterator[str]:
        return iter(default_prediction_ids(self.request_id, self.rows, self.start))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DefaultIds):
            return (self.request_id, self.rows, self.start) == (other.request_id, other.rows, other.start)
        return isinstance(other, Sequence) and not isinstance(other, str) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return f"DefaultIds({self.request_id!r}, rows={self.rows}, start={self.start})"


@dataclass(frozen=True)
class _Record:
    model: str
    version: int
    request_id: str
    at: float
    inputs: Inputs
    outputs: Mapping[str, Any]
    rows: int
    prediction_ids: Sequence[str] | None


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
        self, model: str, version: int, request_id: str, inputs: Inputs, outputs: Mapping[str, Any],
        prediction_ids: Sequence[str] | None = None,
    ) -> bool:
        """Buffer one scored request (inputs as name -> [N, 1] arrays or a list of row dicts); True if kept.

        prediction_ids: one per row (default_prediction_ids when None). Raises ValueError for a count mismatch.
        """
        if self._closed or (self._sample_rate < 1.0 and self._rng() >= self._sample_rate):
            return False
        now = self._clock()
        rows = _row_count(inputs)
        if prediction_ids is not None and len(prediction_ids) != rows:
            raise ValueError(f"{len(prediction_ids)} prediction ids for {rows} rows (request_id={request_id})")
        # The caller must not mutate inputs/outputs/ids afterwards; scoring builds fresh ones per request.
        record = _Record(model, version, request_id, now, inputs, outputs, rows, prediction_ids)
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
            base = f"{model}/{stamp:%Y-%m-%d}/{stamp:%H%M%S}-{uuid.uuid4().hex}"
            lines: list[_Record] = []
            big: list[tuple[tuple[Any, ...], _Record]] = []  # (its _segment_key, record)
            for record in group:
                key = _segment_key(record) if record.rows >= SEGMENT_ROWS else None
                if key is None:
                    lines.append(record)
                else:
                    big.append((key, record))
            if lines:
                blobs.append(_Blob(base + LINES_SUFFIX, _group_lines(lines), sum(r.rows for r in lines)))
            for n, (_, run) in enumerate(groupby(big, key=operator.itemgetter(0))):
                alike = [record for _, record in run]
                blobs.append(_Blob(f"{base}-{n}{SEGMENT_SUFFIX}", _segment(alike), sum(r.rows for r in alike)))
        return blobs


def _group_lines(records: list[_Record]) -> bytes:
    """One model's records as lines, in order. Consecutive records of the same shape (what the scoring function
    logs: array columns of the same inputs and classes) are stacked and written column by column, STACK_ROWS rows
    per _columnar_lines call: a flush of 1,000 one-row requests took ~52 ms line by line (~16 ms stacked), on a
    thread that holds the GIL the requests being scored need.

    Each call holds the GIL from start to end (orjson and the bytes formatting are single C calls), and a
    thread waiting for it only asks for it after the switch interval (5 ms): written as one piece, a flush kept
    the requests in flight waiting up to ~16 ms (devhost's single-row p99 under wrk: 12-15 ms, against 2.4-4.5 ms
    with the log's sample rate at 0). Between pieces the thread hands the GIL over at once (time.sleep(0))."""
    parts = []
    for key, run in groupby(records, key=_stack_key):
        if key is None:
            parts += [_record_lines(record) for record in run]
            continue
        for piece in _pieces(list(run), STACK_ROWS):
            parts.append(_stacked_lines(piece))
            time.sleep(0)
    return b"".join(parts)


# Rows per stacked _columnar_lines call: ~1 ms of GIL here (fewer calls cost little: ~20 µs each for the template).
STACK_ROWS = 64
# A request of this many rows or more (array columns) is written as a Parquet segment (shared.prediction_segments):
# 10,000 rows of 30 inputs took 42.5 ms as JSON Lines in one piece of GIL (~970 bytes a row) and take 18.5 ms as a
# segment (~235 bytes a row, the compression outside the GIL); at 1,000 rows both take ~3 ms, below it lines win.
SEGMENT_ROWS = 1_000


def _segment_key(record: _Record) -> tuple[Any, ...] | None:
    """What records must share to go into one segment (None: written as lines): _stack_key's, and the arrays'
    dtypes, which are the segment's column types (lines stack a float32 and a float64 column alike; one Parquet
    table cannot)."""
    key = _stack_key(record)
    if key is None:
        return None
    inputs, outputs = cast(Mapping[str, np.ndarray], record.inputs), record.outputs
    arrays = [*inputs.values(), outputs["predictions"], outputs.get("probabilities")]
    return key, tuple(None if a is None else np.asarray(a).dtype.str for a in arrays)


def _segment(records: list[_Record]) -> bytes:
    """Records alike by _segment_key as one segment, in order."""
    from shared import prediction_segments  # pyarrow: loaded on this thread by the first big request's flush

    return prediction_segments.encode([prediction_segments.segment_table(
        r.model, r.version, r.request_id, r.at,
        DefaultIds(r.request_id, r.rows) if r.prediction_ids is None else r.prediction_ids,
        cast(Mapping[str, np.ndarray], r.inputs), r.outputs) for r in records])


def _pieces(run: list[_Record], rows: int) -> Iterator[list[_Record]]:
    """Consecutive records of about `rows` rows together (a record with more stays whole)."""
    piece: list[_Record] = []
    count = 0
    for record in run:
        if piece and count + record.rows > rows:
            yield piece
            piece, count = [], 0
        piece.append(record)
        count += record.rows
    if piece:
        yield piece


def _record_lines(record: _Record) -> bytes:
    return "".join(line + "\n" for line in _lines(record)).encode()


def _stack_key(record: _Record) -> tuple[Any, ...] | None:
    """What records must share to be stacked (None: this one is written line by line)."""
    inputs, outputs, ids = record.inputs, record.outputs, record.prediction_ids
    predictions, probabilities = outputs.get("predictions"), outputs.get("probabilities")
    if (not isinstance(inputs, Mapping) or not isinstance(predictions, np.ndarray)
            or (probabilities is not None and not isinstance(probabilities, np.ndarray))
            or (ids is not None and len(ids) != record.rows)):
        return None
    classes = None if probabilities is None else tuple(outputs.get("probability_classes") or ())
    return record.version, tuple(inputs), predictions.dtype.kind, classes


def _stacked_lines(run: list[_Record]) -> bytes:
    """The lines of records alike by _stack_key; line by line if their columns do not line up row for row."""
    first, rows = run[0], sum(r.rows for r in run)
    columns = [cast(Mapping[str, np.ndarray], r.inputs) for r in run]  # Mappings: _stack_key
    try:
        stacked = {name: _concat([c[name] for c in columns]).reshape(-1) for name in columns[0]}
        outputs: dict[str, Any] = {"predictions": _concat([r.outputs["predictions"] for r in run]).reshape(-1)}
        if first.outputs.get("probabilities") is not None:
            outputs["probabilities"] = _concat([r.outputs["probabilities"] for r in run])
            outputs["probability_classes"] = first.outputs.get("probability_classes")
    except ValueError:  # pieces of different shapes
        return b"".join(_record_lines(record) for record in run)
    if any(len(column) != rows for column in (*stacked.values(), outputs["predictions"])):
        return b"".join(_record_lines(record) for record in run)
    ids: list[str] = []
    for r in run:
        ids += default_prediction_ids(r.request_id, r.rows) if r.prediction_ids is None else r.prediction_ids
    return _columnar_lines(first.model, first.version, [(r.request_id, r.at, r.rows) for r in run], ids,
                           stacked, outputs)


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    # along the first axis: ~2x faster than flattening each piece (axis=None) for a thousand one-row requests
    return np.asarray(arrays[0]) if len(arrays) == 1 else np.concatenate(arrays)


def is_columnar(path: str) -> bool:
    """A log blob read as columns (shared.prediction_segments.log_batches): a segment or a scored file's manifest."""
    return path.endswith((SEGMENT_SUFFIX, FILE_SUFFIX))


def log_blob_path(model: str, at: float, tag: str, suffix: str = LINES_SUFFIX) -> str:
    """The blob (in the predictions container) for rows written at `at`: '<model>/<date>/<HHMMSS>-<tag><suffix>'
    (LINES_SUFFIX for lines, SEGMENT_SUFFIX for a segment, FILE_SUFFIX for a scored file's manifest).

    Name it for a moment no later than the rows' own timestamps: monitoring lists blobs by that moment.
    """
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return f"{model}/{stamp:%Y-%m-%d}/{stamp:%H%M%S}-{tag}{suffix}"


def columnar_lines(
    model: str, version: int, request_id: str, at: float, prediction_ids: Sequence[str],
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, Any],
) -> bytes:
    """Many scored rows at once (batch scoring) as JSON Lines in the format above: inputs as name -> [N, 1]
    arrays, outputs with array predictions [N] and probabilities [N, classes] (class keys in
    probability_classes). Every line is ASCII, with the same keys and values json.dumps would give.

    Built column by column: each column's cells become JSON tokens in one call, and one bytes template
    with a %s per cell lays the lines out, so the cost per row is no Python call at all.
    """
    return _columnar_lines(model, version, [(request_id, at, len(prediction_ids))], prediction_ids, inputs, outputs)


def _columnar_lines(
    model: str, version: int, requests: Sequence[tuple[str, float, int]], prediction_ids: Sequence[str],
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, Any],
) -> bytes:
    """columnar_lines for the rows of one or more requests in a row: requests holds (request_id, at, rows) of
    each, in order."""
    head = {"request_id": _SLOT, "prediction_id": _SLOT, "model": model, "version": version, "timestamp": _SLOT}
    out: dict[str, Any] = {"predictions": _SLOT}
    request_tokens: list[bytes] = []
    stamps: list[bytes] = []
    for request_id, at, rows in requests:
        request_tokens += [_token(request_id, dumps)] * rows
        stamps += [b'"%s"' % datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds").encode()] * rows
    columns = [request_tokens, _id_tokens(prediction_ids, dumps), stamps]
    columns += [json_tokens(np.asarray(v).reshape(-1), dumps, OPT_SERIALIZE_NUMPY) for v in inputs.values()]
    columns.append(json_tokens(np.asarray(outputs["predictions"]).reshape(-1), dumps, OPT_SERIALIZE_NUMPY))
    probabilities = outputs.get("probabilities")
    if probabilities is not None:
        keys = list(outputs.get("probability_classes") or ())
        out["probabilities"] = dict.fromkeys(keys, _SLOT)
        columns += [json_tokens(np.asarray(probabilities)[:, k], dumps, OPT_SERIALIZE_NUMPY) for k in range(len(keys))]
    line = {**head, "inputs": dict.fromkeys(inputs, _SLOT), "outputs": out}
    # json.dumps escapes the constant parts (ASCII); '%' in them is doubled so only the slots format
    template = json.dumps(line, separators=(",", ":")).replace("%", "%%").replace(json.dumps(_SLOT), "%s") + "\n"
    rows = len(prediction_ids)
    cells: list[bytes] = [b""] * (rows * len(columns))
    for j, tokens in enumerate(columns):
        cells[j :: len(columns)] = tokens  # row-major: row i's cells are consecutive, in template order
    return (template.encode("ascii") * rows) % tuple(cells)


_SLOT = "\x00slot\x00"  # stands for a cell in the line template; no key or value of a real line holds it


def json_tokens(values: Any, dumps: Callable[..., bytes], numpy_option: int) -> list[bytes]:
    """One JSON token per cell, ASCII: numbers as json.dumps reads them back (float32 widened, NaN as null)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        # float32 widened: the float32 value exactly, as tolist() gives it; orjson takes contiguous arrays only
        values = np.ascontiguousarray(values, dtype=np.float64 if values.dtype.kind == "f" else values.dtype)
        text = dumps(values, option=numpy_option)
        return text[1:-1].split(b",") if len(values) else []
    cells = values.tolist() if isinstance(values, np.ndarray) else values
    known: dict[Any, bytes] = {}  # labels and categories repeat: each distinct value is encoded once
    return [known.get(v) or known.setdefault(v, _token(v, dumps)) for v in cells]


def _token(value: Any, dumps: Callable[..., bytes]) -> bytes:
    return json.dumps(value).encode("ascii") if isinstance(value, str) and not value.isascii() else dumps(value)


def _id_tokens(ids: Sequence[str], dumps: Callable[..., bytes]) -> list[bytes]:
    """Prediction ids as JSON strings; ids that fit names.PREDICTION_ID (all of them) need no escaping."""
    if ids and all(map(_PLAIN_ID.fullmatch, ids)):
        return [b'"' + part + b'"' for part in dumps(list(ids))[2:-2].split(b'","')]
    return json_tokens(list(ids), dumps, 0)


_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]+")


def _row_count(inputs: Inputs) -> int:
    if isinstance(inputs, Mapping):
        first = next(iter(inputs.values()), None)
        return 0 if first is None else len(first)
    return len(inputs)


def _lines(record: _Record) -> Iterable[str]:
    """The record's rows in the line format of the module docstring."""
    stamp = datetime.fromtimestamp(record.at, tz=UTC).isoformat(timespec="milliseconds")
    rid, model, version = record.request_id, record.model, record.version
    ids = record.prediction_ids or default_prediction_ids(rid, record.rows)
    outputs = _output_rows(record.outputs, record.rows)
    # strict=False: a ragged record logs its common rows rather than failing the whole flush
    for pid, inputs, out in zip(ids, _input_rows(record.inputs), outputs, strict=False):
        line = {"request_id": rid, "prediction_id": pid, "model": model, "version": version, "timestamp": stamp,
                "inputs": inputs, "outputs": out}
        yield json.dumps(line, default=str, allow_nan=False)


def _input_rows(inputs: Inputs) -> list[dict[str, Any]]:
    if not isinstance(inputs, Mapping):
        return [{k: _clean(v) for k, v in row.items()} for row in inputs]
    names = list(inputs)
    columns = [[_clean(v) for v in np.asarray(inputs[n]).reshape(-1).tolist()] for n in names]
    # strict=False on the columns for the same reason; each row then has exactly one value per name
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=False)]


def _output_rows(outputs: Mapping[str, Any], rows: int) -> list[dict[str, Any]]:
    """Per-row slices of the per-row outputs (predictions, and probabilities for classifiers); nothing else.

    outputs hold lists (the JSON answer) or arrays (CSV/Arrow answers, batch scoring): predictions [N] and
    probabilities [N, classes] with their class keys in probability_classes.
    """
    if any(isinstance(outputs.get(k), np.ndarray) for k in _OUTPUT_KEYS):
        outputs = _listed(outputs)
    per_row = {k: outputs[k] for k in _OUTPUT_KEYS if isinstance(outputs.get(k), list) and len(outputs[k]) == rows}
    return [{k: v[i] for k, v in per_row.items()} for i in range(rows)]


def _listed(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Array outputs as the JSON answer has them: NaN as null, probabilities as {class: p} per row."""
    listed = dict(outputs)
    predictions = outputs.get("predictions")
    if isinstance(predictions, np.ndarray):
        listed["predictions"] = [_clean(v) for v in predictions.reshape(-1).tolist()]
    probabilities = outputs.get("probabilities")
    if isinstance(probabilities, np.ndarray):
        keys = list(outputs.get("probability_classes") or ())
        listed["probabilities"] = [dict(zip(keys, row, strict=True)) for row in probabilities.tolist()]
    return listed


def _clean(value: Any) -> Any:
    """NaN -> None: strict JSON has no NaN, and a null input is what the client sent anyway."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
