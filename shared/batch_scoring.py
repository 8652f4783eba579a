"""Batch scoring of files: scoring-requests/<model>/<name> -> scoring-results/<model>/<name>.predictions.<ext>.

A file (CSV with a header row, Parquet, or JSON Lines of {column: value} objects, told by its extension)
is read in ranges (Storage.open_read) and parsed chunk by chunk with pyarrow's streaming readers, so
memory holds one chunk of inputs at a time (about CHUNK_BYTES of CSV or JSON, PARQUET_BATCH_ROWS rows of
Parquet) plus the results file being written (about 85 bytes a row of CSV), never the file as Python
objects. (A 1,000,000-row CSV of 30 features, 209 MB, peaks at under 500 MB: bench/README.md.)

- Model: the champion, or version N when the name starts with a folder `v<N>/`
  (scoring-requests/churn/v3/march.csv is scored by version 3 of churn).
- Rows: every mandatory feature column must be there (an optional one may be left out, as in requests);
  other columns are ignored, except `prediction_id`, whose values become the rows' prediction ids (the
  x-prediction-ids rules: names.PREDICTION_ID, unique within a chunk). Values follow shared.scoring's
  rules: finite numbers that fit the input's dtype, an empty cell or null is a missing value. In JSON
  Lines a key a line leaves out is a null there.
- Results, one row per input row in input order: prediction_id, prediction, probability_<class> per
  class (classifiers), model_version; CSV for CSV and JSON Lines files, Parquet for Parquet files.
  Default prediction ids are "<request id>-<row>", rows from 0, with the request id
  "batch-<20 hex digits of sha256(path@etag)>": stable for one version of the file.
- Prediction log: every row (or a share of them: log_sample_rate, MLOPS_PREDICTION_LOG_SAMPLE_RATE, drawn per
  row with a seed of the request id, so a retry logs the same rows), in shared.prediction_log's line format,
  one blob per chunk named for the moment this version's scoring first started; monitoring and feedback see
  batch rows like any others. The log is written in a second pass over the file, after the results: it is
  the dearest step (about 1 KB of JSON per row of 30 numeric inputs), and results should not wait for it.
- Rejection: a file that cannot be scored whole (name, format, columns, a bad value, no such model or
  version, no champion) gets scoring-results/<model>/<name>.rejection.json naming the problem (rows in
  messages count from 0, the first data row of the file), no results and nothing in the prediction log.
- Idempotent per blob version: a create-only marker mlops/batch-scoring/<path>/<etag>.json. A version that
  completed is not scored again (a re-drop is a new ETag and is scored again); a crash mid-way re-runs it
  with the same request id and log blob names, so nothing is logged twice.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from shared import arrow_bodies, paths, prediction_log
from shared import names as name_rules
from shared.errors import BadRequest, Conflict, NotFound, PipelineError, StorageUnreachable
from shared.scoring import LoadedModel, ModelArtifactError, ModelCache, Signature, _check_ids, run_model
from shared.storage import BlobStream, Storage

log = logging.getLogger(__name__)

CHUNK_BYTES = 2 << 20  # CSV and JSON Lines text parsed per chunk: the peak memory scales with it
PARQUET_BATCH_ROWS = 65_536
READ_BUFFER = 4 << 20  # bytes per ranged read of the file
ID_COLUMN = "prediction_id"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RESULTS = {"csv": ("csv", "text/csv"), "jsonl": ("csv", "text/csv"), "parquet": ("parquet", "application/x-parquet")}
_VERSION_FOLDER = re.compile(r"v([0-9]{1,6})/(.+)", re.ASCII | re.DOTALL)
_ROW = re.compile(r"\brow (\d+)")
_PYARROW_TYPES = {"f": pa.float64(), "i": pa.int64()}


class Rejected(Exception):
    """The file cannot be scored whole; `check` names the kind of problem, `message` what to do."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check, self.message = check, message


@dataclass(frozen=True)
class BatchFile:
    """A dropped file: its path in SCORING_REQUESTS, model, pinned version (None: champion) and format."""

    path: str
    model: str
    name: str
    version: int | None
    fmt: str


def parse_path(path: str) -> BatchFile:
    """Model, version pin and format of <model>/[v<N>/]<file>.<csv|parquet|pq|jsonl|ndjson>. Raises Rejected."""
    model, _, name = path.partition("/")
    if not name_rules.is_model_name(model):
        raise Rejected("location", f"folder {model[:80]!r} is not a model name: drop files at "
                                   f"{paths.SCORING_REQUESTS}/<model>/<file> where <model> is "
                                   f"{name_rules.MODEL_NAME_RULE}")
    if not name_rules.is_blob_file_name(name):
        raise Rejected("location", f"file name {name[:80]!r} is not allowed: use a name without empty, '.' or '..' "
                                   "segments")
    pinned = _VERSION_FOLDER.fullmatch(name)
    version = int(pinned.group(1)) if pinned else None
    if version == 0:
        raise Rejected("location", "folder v0/ pins no version: versions count from 1 (v1/, v2/, ...)")
    fmt = FORMATS.get(name[name.rfind("."):].lower() if "." in name else "")
    if fmt is None:
        raise Rejected("format", f"file {name[:80]!r} has no known extension: use .csv (with a header row), "
                                 ".parquet or .jsonl (one JSON object per line)")
    return BatchFile(path, model, name, version, fmt)


def safe_path(path: str) -> str:
    """The path made safe to name reports and markers by (a folder or file name that breaks the rules hashed)."""
    model, _, name = path.partition("/")
    safe_model = model if name_rules.is_model_name(model) else name_rules.safe_segment(model)
    return f"{safe_model}/{name if name_rules.is_blob_file_name(name) else name_rules.safe_segment(name)}"


def request_id(path: str, etag: str) -> str:
    """The request id of one version of a dropped file (a prefix of its default prediction ids)."""
    return "batch-" + hashlib.sha256(f"{path}@{etag.strip(chr(34))}".encode()).hexdigest()[:20]


def score_file(
    storage: Storage, cache: ModelCache, path: str, *, clock: Callable[[], float] = time.time,
    chunk_bytes: int = CHUNK_BYTES, log_sample_rate: float = 1.0,
) -> dict[str, Any]:
    """Score the current version of SCORING_REQUESTS/<path>: results or a rejection report, once per ETag.

    Returns the outcome (scored, rejected, duplicate, gone, superseded). Raises StorageUnreachable and
    other transient errors, so the host retries the trigger.
    """
    try:
        stream = storage.open_read(paths.SCORING_REQUESTS, path)
    except NotFound:
        return {"outcome": "gone", "path": path}  # deleted since the event
    where = safe_path(path)
    marker = paths.batch_marker(where, stream.etag)
    started = _claim(storage, marker, clock)
    if started is None:
        return {"outcome": "duplicate", "path": path, "etag": stream.etag}
    try:
        outcome = _score(storage, cache, parse_path(path), stream, started, chunk_bytes, log_sample_rate)
    except Rejected as problem:
        outcome = _reject(storage, where, stream.etag, problem, clock)
    except Conflict:
        return {"outcome": "superseded", "path": path, "etag": stream.etag}  # overwritten mid-read: a new event
    storage.write_json(paths.MLOPS, marker, {"status": "completed", "started": started, "outcome": outcome})
    return outcome


def _claim(storage: Storage, marker: str, clock: Callable[[], float]) -> float | None:
    """When scoring this version first started (kept across retries), or None when it was completed before."""
    now = clock()
    if storage.create_json(paths.MLOPS, marker, {"status": "scoring", "started": now}):
        return now
    state, _ = storage.read_json(paths.MLOPS, marker)
    return None if state.get("status") == "completed" else float(state["started"])


def _score(
    storage: Storage, cache: ModelCache, batch: BatchFile, stream: BlobStream, started: float, chunk_bytes: int,
    log_sample_rate: float,
) -> dict[str, Any]:
    """Pass 1 scores every row into the results file (a bad row rejects the file before anything is logged);
    pass 2 reads the file again and logs the rows, so the results are there as soon as the model has run."""
    loaded = _model(cache, batch)
    rid = request_id(batch.path, stream.etag)
    extension, media = RESULTS[batch.fmt]
    results = _ResultsFile(extension)
    rows = _scan(stream, batch.fmt, chunk_bytes, _ChunkScorer(loaded, rid, results=results))
    if not rows:
        raise Rejected("rows", "the file has no rows to score")
    target = paths.batch_result(batch.path, extension)
    storage.write(paths.SCORING_RESULTS, target, results.close(), content_type=media)
    storage.delete(paths.SCORING_RESULTS, paths.batch_rejection(batch.path))  # a report of an older version
    log.info("batch scoring: %s/%s -> %s/%s (%d rows, version %d)", paths.SCORING_REQUESTS, batch.path,
             paths.SCORING_RESULTS, target, rows, loaded.version)
    if log_sample_rate > 0:
        _scan(stream.reopen(), batch.fmt, chunk_bytes, _ChunkScorer(loaded, rid, log=_LogWriter(storage, started,
                                                                                        log_sample_rate)))
    return {"outcome": "scored", "path": batch.path, "rows": rows, "model": loaded.name,
            "version": loaded.version, "request_id": rid, "results": f"{paths.SCORING_RESULTS}/{target}"}


def _scan(stream: BlobStream, fmt: str, chunk_bytes: int, scorer: _ChunkScorer) -> int:
    """Feed every chunk of the file to the scorer; the rows it saw."""
    with ThreadPoolExecutor(1, thread_name_prefix="batch-log") as log_writer:
        for chunk in _chunks(stream, fmt, scorer.signature, chunk_bytes):
            scorer.add(chunk, log_writer)
        scorer.wait()
    return scorer.rows


def _model(cache: ModelCache, batch: BatchFile) -> LoadedModel:
    try:
        return cache.get(batch.model, version=batch.version)
    except StorageUnreachable:
        raise
    except (BadRequest, NotFound, ModelArtifactError) as exc:
        raise Rejected("model", exc.message) from None
    except PipelineError as exc:  # Unavailable: no champion yet
        if exc.status != 503 or exc.code != "TEMPORARILY_UNAVAILABLE":
            raise
        raise Rejected("model", f"{exc.message}; drop the file again once a version is promoted") from None


@dataclass(frozen=True)
class _LogWriter:
    """Where and how a scan logs its rows: a share of them (seeded by request id and chunk), under fixed names."""

    storage: Storage
    started: float
    sample_rate: float

    def write(self, loaded: LoadedModel, rid: str, chunk: int, ids: Sequence[str], feeds: dict[str, np.ndarray],
              labels: np.ndarray, probabilities: np.ndarray | None) -> None:
        if self.sample_rate < 1.0:
            keep = np.random.default_rng([int(rid[6:], 16), chunk]).random(len(ids)) < self.sample_rate
            if not keep.any():
                return
            ids = [i for i, kept in zip(ids, keep.tolist(), strict=True) if kept]
            feeds = {name: values[keep] for name, values in feeds.items()}
            labels = labels[keep]
            probabilities = None if probabilities is None else probabilities[keep]
        outputs: dict[str, Any] = {"predictions": labels}
        if probabilities is not None:
            outputs.update(probabilities=probabilities, probability_classes=loaded.signature.class_keys)
        data = prediction_log.columnar_lines(loaded.name, loaded.version, rid, self.started, ids, feeds, outputs)
        name = prediction_log.log_blob_path(loaded.name, self.started, f"{rid}-{chunk:05d}")
        self.storage.write(paths.PREDICTIONS, name, data, content_type="application/x-ndjson")


class _ChunkScorer:
    """Scores chunks in order into the results file, or logs them (each chunk's lines on a helper thread)."""

    def __init__(self, loaded: LoadedModel, rid: str, *, results: _ResultsFile | None = None,
                 log: _LogWriter | None = None) -> None:
        self._loaded, self._rid, self._results, self._log = loaded, rid, results, log
        self.signature = loaded.signature
        self.rows = 0
        self._chunks = 0
        self._pending: Future[None] | None = None

    def add(self, batch: pa.RecordBatch, log_writer: ThreadPoolExecutor) -> None:
        feeds, ids = chunk_inputs(batch, self.signature, self._rid, self.rows)
        labels, probabilities = run_model(self._loaded, feeds)
        if self._results is not None:
            self._results.write(arrow_bodies.results_table(labels, probabilities, self.signature.class_keys, ids,
                                                           self._loaded.version))
        if self._log is not None:
            self.wait()  # at most one chunk's log lines in flight: memory stays bounded
            self._pending = log_writer.submit(self._log.write, self._loaded, self._rid, self._chunks, ids, feeds,
                                              labels, probabilities)
        self.rows += batch.num_rows
        self._chunks += 1

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None


def chunk_inputs(batch: pa.RecordBatch, signature: Signature, rid: str,
                 start: int) -> tuple[dict[str, Any], Sequence[str]]:
    """Session feeds and prediction ids of one chunk whose first row is row `start` of the file. Raises Rejected."""
    names = [n for n in batch.schema.names if n != ID_COLUMN]
    try:
        request = arrow_bodies.table_request(batch.select(names), signature)
        ids = _chunk_ids(batch, rid, start)
    except BadRequest as exc:
        message = _ROW.sub(lambda m: f"row {int(m.group(1)) + start}", exc.message)
        raise Rejected("values", message) from None
    return request.inputs, ids


def _chunk_ids(batch: pa.RecordBatch, rid: str, start: int) -> Sequence[str]:
    if ID_COLUMN not in batch.schema.names:
        return prediction_log.DefaultIds(rid, batch.num_rows, start)
    column = batch.column(ID_COLUMN)
    if column.null_count:
        raise BadRequest(f"column {ID_COLUMN!r} row {column.is_null().index(True).as_py()} is empty: "
                         "give every row its id, or leave the column out for ids made for you")
    ids = column.cast(pa.string()).to_pylist()
    _check_ids(ids, f"column {ID_COLUMN!r}")
    return ids


# ---------------------------------------------------------------------------------------------
# Readers: feature (and id) columns only, typed by the signature, one record batch per chunk


def _chunks(stream: BlobStream, fmt: str, signature: Signature, chunk_bytes: int) -> Iterator[pa.RecordBatch]:
    """The file's chunks; Rejected for a file pyarrow cannot read (its own words)."""
    buffered = io.BufferedReader(stream, buffer_size=READ_BUFFER)
    opener = {"csv": _csv_chunks, "parquet": _parquet_chunks, "jsonl": _jsonl_chunks}[fmt]
    try:
        yield from opener(buffered, signature, chunk_bytes)
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError, csv.Error) as exc:
        if isinstance(exc.__context__, PipelineError):  # storage failed under pyarrow's read (overwritten, down)
            raise exc.__context__ from None
        raise Rejected("format", f"the file cannot be read as {arrow_bodies.FORMAT_LABELS.get(fmt, fmt)}: "
                                 f"{str(exc)[:300]}") from None


def _wanted(names: list[str], signature: Signature) -> list[str]:
    """The feature and id columns among a file's columns. Raises Rejected for repeated or missing ones."""
    repeated = sorted({n for n in names if names.count(n) > 1} & ({*signature.feature_names, ID_COLUMN}))
    if repeated:
        raise Rejected("columns", f"duplicate columns {repeated}")
    missing = [f.name for f in signature.features if f.name not in names and not f.optional]
    if missing:
        raise Rejected("columns", f"missing columns {missing}; the model expects {list(signature.feature_names)}")
    return [n for n in (*signature.feature_names, ID_COLUMN) if n in names]


def _types(signature: Signature) -> dict[str, pa.DataType]:
    types = {f.name: _PYARROW_TYPES.get(f.dtype.kind, pa.string()) for f in signature.features}
    return {**types, ID_COLUMN: pa.string()}


def _csv_chunks(source: io.BufferedIOBase, signature: Signature, chunk_bytes: int) -> Iterator[pa.RecordBatch]:
    assert isinstance(source, io.BufferedReader)
    header = next(csv.reader([source.peek(1 << 20).split(b"\n", 1)[0].decode("utf-8-sig")]), [])
    wanted = _wanted([h.strip() for h in header], signature)
    if any(h != h.strip() for h in header):
        raise Rejected("columns", "column names in the header row have blanks around them; remove them")
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=chunk_bytes),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types=_types(signature), include_columns=wanted,
                                              null_values=[""], strings_can_be_null=False,
                                              quoted_strings_can_be_null=False),
    )
    yield from reader


def _parquet_chunks(source: io.BufferedIOBase, signature: Signature, chunk_bytes: int) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(source)
    wanted = _wanted(list(parquet.schema_arrow.names), signature)
    yield from parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted)


def _jsonl_chunks(source: io.BufferedIOBase, signature: Signature, chunk_bytes: int) -> Iterator[pa.RecordBatch]:
    schema = pa.schema(list(_types(signature).items()))
    reader = pa_json.open_json(
        source, read_options=pa_json.ReadOptions(block_size=chunk_bytes),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    for batch in reader:
        if batch.num_rows and batch.column(ID_COLUMN).null_count == batch.num_rows:
            batch = batch.drop_columns([ID_COLUMN])  # no ids in this chunk: they are made
        yield batch


class _ResultsFile:
    """The results file, encoded chunk by chunk (CSV with one header row, or Parquet with a row group per chunk)."""

    def __init__(self, extension: str) -> None:
        self._extension = extension
        self._sink = io.BytesIO()
        self._writer: pa_csv.CSVWriter | pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            opener = pa_csv.CSVWriter if self._extension == "csv" else pq.ParquetWriter
            self._writer = opener(self._sink, table.schema)
        self._writer.write_table(table)

    def close(self) -> bytes:
        if self._writer is not None:
            self._writer.close()
        return self._sink.getvalue()  # the buffer itself, not a copy


def _reject(
    storage: Storage, where: str, etag: str, problem: Rejected, clock: Callable[[], float],
) -> dict[str, Any]:
    report = {"status": "rejected", "source_blob": f"{paths.SCORING_REQUESTS}/{where}", "etag": etag,
              "at": clock(), "problems": [{"check": problem.check, "message": problem.message}]}
    target = paths.batch_rejection(where)
    storage.write_json(paths.SCORING_RESULTS, target, report)
    for extension in ("csv", "parquet"):  # results of an older version of the file would read as current
        storage.delete(paths.SCORING_RESULTS, paths.batch_result(where, extension))
    log.warning("batch scoring: rejected %s/%s: %s (report %s/%s)", paths.SCORING_REQUESTS, where, problem.message,
                paths.SCORING_RESULTS, target)
    return {"outcome": "rejected", "path": where, "report": f"{paths.SCORING_RESULTS}/{target}",
            "problems": report["problems"]}
