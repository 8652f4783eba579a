"""Stream one time window of a model's prediction log as column chunks, in bounded memory.

The log (shared.prediction_log) is JSON Lines blobs at `predictions/<model>/<YYYY-MM-DD>/<HHMMSS>-<id>.jsonl`,
Parquet segments of the same fields at `.../<HHMMSS>-<id>.parquet` (shared.prediction_segments), and, for
batch-scored files, manifests at `.../<HHMMSS>-<id>.file.json` whose rows are copies of the file and its
results (shared.batch_scoring.logged_batches reads them as a segment's), each named for the moment its rows
were flushed (a segment or manifest: for the moment its file's scoring started), which is never before the
rows inside were scored. So a
window [start, end) lists the date folders from start's date to (end + flush_slack)'s date and reads
only the blobs flushed in [start, end + flush_slack]; rows are then kept by their own timestamp and
model version. A row flushed more than flush_slack after it was scored (the logger retries a failed
write under its first path, so only a logger stalled that long) is not seen.

A segment's (or a manifest's) rows go into the chunks straight from its columns (filtered by version and time,
converted with the JSON rules: numbers to float64 with NaN for null, categories through category_column), never
as row objects; a chunk may hold rows of both formats and comes out exactly as if every row had been a JSON line.

Memory: one blob's bytes, at most PART_ROWS parsed rows as Python objects (JSON Lines) or
prediction_segments.READ_BATCH_ROWS rows as Arrow columns (a segment; a scored file's chunk for a manifest), and
at most chunk_rows rows as
numpy columns at a time; each chunk is handed over before the next is parsed, so the window is never
held whole, and never as Python objects.
"""
from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from shared.errors import NotFound
from shared.paths import PREDICTIONS
from shared.prediction_log import is_columnar
from shared.spec import CATEGORICAL_MISSING, FeatureKind, TrainingSpec
from shared.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 10_000
# How long after scoring a row may still be flushed: the logger flushes every few seconds (flush_seconds)
# and keeps a failed batch's path, so minutes are plenty; a longer slack only costs listing more blobs.
DEFAULT_FLUSH_SLACK = timedelta(minutes=10)

_BLOB_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})/(\d{2})(\d{2})(\d{2})-[^/]*\.(?:jsonl|parquet|file\.json)")
_PLAIN_NUMBERS = frozenset({int, float, type(None)})
_PLAIN_CATEGORIES = frozenset({str, type(None)})
# Rows are turned into numpy columns in parts of this many, then joined into chunk_rows-sized chunks: a few
# hundred parsed rows stay in the CPU caches and die young; 10,000 live row objects made the window 2x slower.
PART_ROWS = 256


@dataclass(frozen=True, eq=False)
class LogChunk:
    """Up to chunk_rows logged predictions as columns (row i of every field is the same prediction).

    timestamps: float64 epoch seconds (UTC). features: numeric -> float64 with NaN for null or non-numeric,
    categorical -> object array of str or None. predictions: float64 if every prediction is a number or
    null, else object (str or None). probabilities: rows x len(classes) float64 (NaN where a row has no
    value), None when no row of the chunk carries probabilities; classes keep one order for the window.
    """

    timestamps: np.ndarray
    prediction_ids: list[str]
    features: dict[str, np.ndarray]
    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(self.prediction_ids)


def feature_kinds(spec: TrainingSpec) -> dict[str, FeatureKind]:
    """Feature name -> numeric | categorical, in spec order: what iter_log_chunks needs from a spec."""
    return {f.name: f.kind for f in spec.features}


def iter_log_chunks(
    storage: Storage,
    model: str,
    version: int | None,
    start: datetime,
    end: datetime,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    kinds: Mapping[str, FeatureKind] | None = None,
    flush_slack: timedelta = DEFAULT_FLUSH_SLACK,
) -> Iterator[LogChunk]:
    """Chunks of the rows of `model` (one `version`, or all if None) scored in [start, end), oldest blob first.

    kinds: feature name -> numeric | categorical (feature_kinds(spec)); pass it. Without it every input name
    of the rows is a feature, typed per part of PART_ROWS rows by its values (inferred_kinds): a numeric
    feature with a stray string then arrives as categorical for that part, which DriftAccumulator reads
    back as numbers only where it can.
    Raises ValueError for naive datetimes or chunk_rows < 1 (raised on the first next()).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes (the log is in UTC)")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    window = _Window(version, start.timestamp(), end.timestamp())
    builder = _ChunkBuilder(kinds)
    for path in log_blob_names(storage, model, start, end, flush_slack):
        yield from _blob_chunks(storage, path, window, builder, chunk_rows)
    if builder.rows:
        yield builder.build()


def _blob_chunks(storage: Storage, path: str, window: _Window, builder: _ChunkBuilder,
                 chunk_rows: int) -> Iterator[LogChunk]:
    """Add one blob's rows (JSON Lines, or a segment's columns) to the builder; the chunks they fill."""
    if is_columnar(path):
        for part in _segment_parts(storage, path, window, builder):
            yield from builder.add_part(part, chunk_rows)
        return
    for row, prediction_id, stamp in _kept_rows(storage, path, window):
        builder.add(row, prediction_id, stamp)
        if builder.rows >= chunk_rows:
            yield builder.build()


def log_blob_names(storage: Storage, model: str, start: datetime, end: datetime, flush_slack: timedelta) -> list[str]:
    """Paths in PREDICTIONS of the blobs that can hold rows scored in [start, end), in name (time) order."""
    last = end + flush_slack
    names: list[str] = []
    for day in _days(start.astimezone(UTC).date(), last.astimezone(UTC).date()):
        for info in storage.list(PREDICTIONS, f"{model}/{day.isoformat()}/"):
            flushed = _flushed_at(info.name)
            # a blob flushed within [start's second, last] may hold window rows; a name we cannot read is kept
            if flushed is None or (flushed + timedelta(seconds=1) > start and flushed <= last):
                names.append(info.name)
    return names


@dataclass(frozen=True)
class _Window:
    version: int | None
    start: float  # epoch seconds, inclusive
    end: float  # exclusive


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _flushed_at(name: str) -> datetime | None:
    match = _BLOB_NAME.search(name)
    if match is None:
        return None
    day, hour, minute, second = match.groups()
    try:
        return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}+00:00")
    except ValueError:
        return None


def _kept_rows(storage: Storage, path: str, window: _Window) -> Iterator[tuple[dict[str, Any], str, float]]:
    """(row, prediction id, epoch seconds) of one blob's rows inside the window and of the version."""
    previous_request: object = None
    index = 0
    for row in _parsed_rows(storage, path):
        request_id = row.get("request_id")
        # rows of one request are consecutive lines: the fallback id counts them (the logger's own order)
        index = index + 1 if request_id == previous_request else 0
        previous_request = request_id
        if window.version is not None and row.get("version") != window.version:
            continue
        stamp = _epoch(row.get("timestamp"))
        if stamp is None or not window.start <= stamp < window.end:
            continue
        prediction_id = row.get("prediction_id")
        yield row, prediction_id if isinstance(prediction_id, str) else f"{request_id}-{index}", stamp


def _parsed_rows(storage: Storage, path: str) -> Iterator[dict[str, Any]]:
    try:
        data = storage.read(PREDICTIONS, path).data
    except NotFound:  # deleted (retention) between listing and reading: nothing left to monitor
        return
    skipped = 0
    for line in data.splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            skipped += bool(line.strip())
            continue
        if isinstance(row, dict):
            yield row
    if skipped:
        log.warning("prediction log blob (container=%s, path=%s): skipped %d unparsable line(s)",
                    PREDICTIONS, path, skipped)


def _segment_parts(storage: Storage, path: str, window: _Window, builder: _ChunkBuilder) -> Iterator[LogChunk]:
    """A prediction log segment's rows inside the window and of the version, as columns (no row objects)."""
    from shared import prediction_segments  # pyarrow: loaded by the first window that holds a segment

    try:
        data = storage.read(PREDICTIONS, path).data
    except NotFound:  # deleted (retention) between listing and reading: nothing left to monitor
        return
    offset = 0
    try:
        for batch in prediction_segments.log_batches(storage, path, data):
            stamps = prediction_segments.epoch_seconds(batch)
            keep = (stamps >= window.start) & (stamps < window.end)  # NaN (no timestamp) is never kept
            if window.version is not None:
                keep &= np.asarray(batch.column("version").to_numpy(zero_copy_only=False)) == window.version
            rows = np.flatnonzero(keep)
            if len(rows):
                yield builder.segment_part(batch.take(rows) if len(rows) < batch.num_rows else batch, stamps[rows],
                                           offset + rows)
            offset += batch.num_rows
    except ValueError as exc:  # not a segment, or damaged: skipped as an unparsable JSON line is
        log.warning("prediction log blob (container=%s, path=%s): skipped, unreadable: %s", PREDICTIONS, path, exc)


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    # the logger writes UTC with an offset; a bare timestamp is read as UTC too
    return (stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)).timestamp()


class _ChunkBuilder:
    """Rows of the chunk being filled; the class order is fixed by the first row with probabilities."""

    def __init__(self, kinds: Mapping[str, FeatureKind] | None) -> None:
        self.kinds = None if kinds is None else dict(kinds)
        self.classes: tuple[str, ...] = ()
        # one C call per row picks every feature; rows missing a feature take the slow path (_inputs_of)
        self._pick = operator.itemgetter(*self.kinds) if self.kinds is not None and len(self.kinds) > 1 else None
        self._stamps: list[float] = []
        self._ids: list[str] = []
        self._inputs: list[Any] = []  # per row: the picked values (kinds given) or the inputs dict (inferred)
        self._outputs: list[dict[str, Any]] = []
        self._parts: list[LogChunk] = []  # converted parts of the chunk being filled
        self._parted = 0  # rows in _parts

    @property
    def rows(self) -> int:
        return self._parted + len(self._ids)

    def add(self, row: dict[str, Any], prediction_id: str, stamp: float) -> None:
        self._stamps.append(stamp)
        self._ids.append(prediction_id)
        self._inputs.append(self._inputs_of(row.get("inputs")))
        outputs = row.get("outputs")
        self._outputs.append(outputs if isinstance(outputs, dict) else {})
        if len(self._ids) >= PART_ROWS:
            self._flush_part()

    def add_part(self, part: LogChunk, chunk_rows: int) -> Iterator[LogChunk]:
        """Add rows already in columns (a segment's, in this builder's class order); the chunks they complete."""
        self._flush_part()  # rows added one by one before these come first
        start = 0
        while start < part.rows:
            stop = min(part.rows, start + chunk_rows - self.rows)
            self._parts.append(_sliced(part, start, stop))
            self._parted += stop - start
            start = stop
            if self.rows >= chunk_rows:
                yield self.build()

    def segment_part(self, batch: Any, stamps: np.ndarray, positions: np.ndarray) -> LogChunk:
        """A part made of a segment's rows (a pyarrow RecordBatch; positions: each row's index in its segment),
        with the values add() would have read from the same rows as JSON lines."""
        from shared import prediction_segments

        inputs = prediction_segments.struct_fields(batch, "inputs")
        outputs = prediction_segments.struct_fields(batch, "outputs")
        kinds = self.kinds if self.kinds is not None else {name: _arrow_kind(col.type) for name, col in inputs.items()}
        rows = batch.num_rows
        features = {name: _arrow_column(inputs.get(name), kind, rows) for name, kind in kinds.items()}
        probabilities = prediction_segments.probability_fields(batch)
        if probabilities and not self.classes:
            self.classes = tuple(probabilities)
        matrix = None
        if probabilities:
            matrix = np.column_stack([_arrow_column(probabilities.get(c), "numeric", rows) for c in self.classes]) \
                if self.classes else np.empty((rows, 0))
        return LogChunk(timestamps=stamps, prediction_ids=_segment_ids(batch, positions), features=features,
                        predictions=_arrow_predictions(outputs.get("predictions"), rows), probabilities=matrix,
                        classes=self.classes)

    def _inputs_of(self, inputs: object) -> Any:
        if self.kinds is None:
            return inputs if isinstance(inputs, dict) else {}
        if not isinstance(inputs, dict):
            return (None,) * len(self.kinds)
        if self._pick is not None:
            try:
                return self._pick(inputs)
            except KeyError:
                pass
        return tuple(inputs.get(name) for name in self.kinds)

    def build(self) -> LogChunk:
        """The rows added since the last build, as one chunk."""
        self._flush_part()
        parts, self._parts, self._parted = self._parts, [], 0
        return parts[0] if len(parts) == 1 else _concatenated(parts, self.classes)

    def _flush_part(self) -> None:
        if not self._ids:
            return
        outputs = self._outputs
        self._parts.append(LogChunk(
            timestamps=np.array(self._stamps, dtype=np.float64),
            prediction_ids=self._ids,
            features=self._features(),
            predictions=_predictions([out.get("predictions") for out in outputs]),
            probabilities=self._probabilities([out.get("probabilities") for out in outputs]),
            classes=self.classes,
        ))
        self._parted += len(self._ids)
        self._stamps, self._ids, self._inputs, self._outputs = [], [], [], []

    def _features(self) -> dict[str, np.ndarray]:
        kinds, rows = self.kinds, self._inputs
        if kinds is None:
            kinds = inferred_kinds(rows)
            rows = [tuple(inputs.get(name) for name in kinds) for inputs in rows]
        # zip(*rows) transposes in C: one tuple per feature
        columns = list(zip(*rows, strict=True)) if kinds else []
        return {name: _column(list(values), kind) for (name, kind), values in zip(kinds.items(), columns, strict=True)}

    def _probabilities(self, values: list[Any]) -> np.ndarray | None:
        rows = [v if isinstance(v, dict) else _NO_PROBABILITIES for v in values]
        if not self.classes:
            first = next((r for r in rows if r), None)
            if first is None:
                return None
            self.classes = tuple(str(c) for c in first)
        if not any(rows):
            return None
        columns = [numeric_column([r.get(c) for r in rows]) for c in self.classes]
        return np.column_stack(columns) if columns else np.empty((len(rows), 0))


_NO_PROBABILITIES: dict[str, Any] = {}


def inferred_kinds(inputs: list[dict[str, Any]]) -> dict[str, FeatureKind]:
    """Every input name of these rows (first seen first): numeric if all its non-null values are numbers."""
    names = dict.fromkeys(name for row in inputs for name in row)
    return {name: "numeric" if set(map(type, (row.get(name) for row in inputs))) <= _PLAIN_NUMBERS else "categorical"
            for name in names}


def _sliced(part: LogChunk, start: int, stop: int) -> LogChunk:
    if start == 0 and stop == part.rows:
        return part
    return LogChunk(
        timestamps=part.timestamps[start:stop], prediction_ids=part.prediction_ids[start:stop],
        features={name: values[start:stop] for name, values in part.features.items()},
        predictions=part.predictions[start:stop],
        probabilities=None if part.probabilities is None else part.probabilities[start:stop], classes=part.classes,
    )


def _concatenated(parts: list[LogChunk], classes: tuple[str, ...]) -> LogChunk:
    predictions = [part.predictions for part in parts]
    if any(p.dtype == object for p in predictions):  # some part had a label: spell the numbers as labels too
        predictions = [p if p.dtype == object else category_column(p.tolist()) for p in predictions]
    probabilities = None
    if any(part.probabilities is not None for part in parts):
        # parts before the first row with probabilities, or without any, have none: NaN
        probabilities = np.concatenate([
            part.probabilities if part.probabilities is not None else np.full((part.rows, len(classes)), np.nan)
            for part in parts
        ])
    return LogChunk(
        timestamps=np.concatenate([part.timestamps for part in parts]),
        prediction_ids=[i for part in parts for i in part.prediction_ids],
        features=_joined_features(parts),
        predictions=np.concatenate(predictions),
        probabilities=probabilities,
        classes=classes,
    )


def _joined_features(parts: list[LogChunk]) -> dict[str, np.ndarray]:
    # with inferred kinds, parts may differ in names (a missing one is null) and in a name's kind (object wins)
    names = dict.fromkeys(name for part in parts for name in part.features)
    return {name: np.concatenate([part.features.get(name, np.full(part.rows, np.nan)) for part in parts])
            for name in names}


def _arrow_kind(kind: Any) -> FeatureKind:
    """A segment column's feature kind, as inferred_kinds would type its values: numbers (and nulls) are numeric."""
    import pyarrow as pa

    return "numeric" if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind) \
        else "categorical"


def _arrow_column(column: Any, kind: FeatureKind, rows: int) -> np.ndarray:
    """numeric_column / category_column of a segment's column (None: the segment has no such field)."""
    if column is None:
        return _column([None] * rows, kind)
    import pyarrow as pa

    from shared.arrow_numpy import float_values

    if kind == "numeric" and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        values = float_values(column)  # nulls are NaN
        finite = np.isfinite(values)
        if finite.all():
            return values  # read-only when it shares the segment's buffer; chunks are never written to
        values = np.where(finite, values, np.nan)  # null is NaN already; numeric_column drops infinities too
        return values
    return _column(column.to_pylist(), kind)  # strings, or a type the kind does not expect: the JSON rules


def _arrow_predictions(column: Any, rows: int) -> np.ndarray:
    if column is None:
        return _predictions([None] * rows)
    import pyarrow as pa

    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        return _arrow_column(column, "numeric", rows)
    return _predictions(column.to_pylist())


def _segment_ids(batch: Any, positions: np.ndarray) -> list[str]:
    """The rows' prediction ids; a row without one is '<request_id>-<its index in the segment>'."""
    ids: list[Any] = batch.column("prediction_id").to_pylist()
    if None in ids:
        requests = batch.column("request_id").to_pylist()
        ids = [i if i is not None else f"{r}-{p}" for i, r, p in zip(ids, requests, positions.tolist(), strict=True)]
    return ids


def _column(values: list[Any], kind: FeatureKind) -> np.ndarray:
    return numeric_column(values) if kind == "numeric" else category_column(values)


def numeric_column(values: list[Any]) -> np.ndarray:
    """float64, NaN for null, non-numeric (booleans and strings included) and non-finite values."""
    if set(map(type, values)) <= _PLAIN_NUMBERS:
        try:  # numpy turns None into NaN itself; this path is what keeps a 100k-row window fast
            array = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64
            array = np.array([_number(v) for v in values], dtype=np.float64)
    else:
        array = np.array([_number(v) for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = np.nan
    return array


def category_column(values: list[Any]) -> np.ndarray:
    """Object array of str or None; 3.0 is spelled '3', as prepare spells categories (training.category_strings).

    The scorer logs a missing category as the model's missing marker: it is read back as None (a null).
    """
    if set(map(type, values)) <= _PLAIN_CATEGORIES:
        column = np.fromiter(values, dtype=object, count=len(values))
    else:
        column = np.fromiter((category_string(v) for v in values), dtype=object, count=len(values))
    column[column == CATEGORICAL_MISSING] = None
    return column


def _predictions(values: list[Any]) -> np.ndarray:
    if set(map(type, values)) <= _PLAIN_NUMBERS:
        return numeric_column(values)
    return category_column(values)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def category_string(value: Any) -> str | None:
    """A category or class label as prepare spells it: 3.0 -> '3', True -> 'True', null/NaN -> None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
