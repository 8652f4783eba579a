"""Batch scoring of files: scoring-requests/<model>/<name> -> scoring-results/<model>/<name>.predictions.<ext>.

A file (CSV with a header row, Parquet, or JSON Lines of {column: value} objects, told by its extension)
is read in ranges (Storage.open_read) and scored chunk by chunk in one pass, so memory holds a few chunks of
inputs at a time and a few blocks of results (uploaded while the file is scored: Storage.write_chunks
commits them once the last chunk is in), never the file or its results whole, nor as Python objects.
A CSV file is read RANGE_BYTES at a time on a helper thread and cut into blocks of about CHUNK_BYTES of
whole lines, which WORKERS threads parse (the native reader when every column is a float feature, else
pyarrow), turn into feeds and score (onnxruntime)
side by side, all three releasing the GIL; the caller's thread finishes the chunks in file order (row
numbers, prediction ids, the results file). A block cut at line ends reads exactly as the whole file would
while its quotes open and close whole fields in pairs (a line end between pairs is a row end): from the
first block where that fails (a quoted line end at the cut, a quote inside a cell, a bare carriage return,
a line longer than READ_BUFFER) on, pyarrow's streaming reader reads the rest. Parquet and JSON Lines are
read by pyarrow's streaming readers (a chunk is PARQUET_BATCH_ROWS rows or about CHUNK_BYTES of JSON) and
scored on the same workers. (A 1,000,000-row CSV of 30 features, 209 MB, peaks under 500 MB: bench/README.md.)

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
- Prediction log: the file's rows are not encoded again (as Parquet segments of every input they took ~1.5 CPU s
  a million rows, more than the scoring): the log keeps server-side copies (Storage.copy: no byte passes
  through the function) of the file, made before it is read and only of the ETag being scored, and of its
  results once committed, under predictions/<model>/files/<request id>/, and a manifest that names them,
  `<model>/<date>/<HHMMSS>-<request id>.file.json` for the moment this version's scoring first started, written
  last. Monitoring, feedback joins and replay read a manifest's rows as a segment's (logged_batches: the copy
  read again by the readers that scored it, beside the copied results). log_sample_rate
  (MLOPS_PREDICTION_LOG_SAMPLE_RATE) is the share of rows those readers see, drawn per row from the request id
  and row number, the same rows on every read; 0 logs nothing. Storage pays for the copies (the file and its
  results, as they are: ~300 bytes a row of 30 numeric inputs as CSV; on Azurite a copy shares the stored
  data).
- Rejection: a file that cannot be scored whole (name, format, columns, a bad value, no such model or
  version, no champion) gets scoring-results/<model>/<name>.rejection.json naming the problem (rows in
  messages count from 0, the first data row of the file; the first problem in file order is reported),
  no results and nothing in the prediction log: the copy of the file is deleted before the report is
  written (so is that of a file overwritten while it is read); no manifest was written, so no reader saw it.
- Idempotent per blob version: a create-only marker mlops/batch-scoring/<path>/<etag>.json, marked completed
  once the results and the log's manifest are written. A version that completed is not scored again (a
  re-drop is a new ETag and is scored again); a crash mid-way re-runs it with the same request id and
  log names, so nothing is logged twice.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from shared import arrow_bodies, native_numbers, paths, prediction_log, prediction_segments
from shared import names as name_rules
from shared.errors import BadRequest, Conflict, NotFound, PipelineError, StorageUnreachable
from shared.scoring import (
    SIGNATURE_KEY,
    LoadedModel,
    ModelArtifactError,
    ModelCache,
    ScoringRequest,
    Signature,
    _check_ids,
    _column_order,
    matrix_request,
    parse_signature,
    run_model,
)
from shared.storage import BlobStream, Storage

log = logging.getLogger(__name__)

CHUNK_BYTES = 2 << 20  # CSV and JSON Lines text parsed per chunk: the peak memory scales with it
PARQUET_BATCH_ROWS = 65_536
READ_BUFFER = 4 << 20  # bytes per ranged read of the streaming readers (Parquet, JSON Lines, quoted CSV)
WORKERS = 2  # threads scoring chunks: the parse, the feeds and onnxruntime release the GIL
RANGE_BYTES = 8 << 20  # bytes per ranged read of a CSV file: fewer, bigger reads cost storage less CPU
RANGES_PER_CHUNK = 4  # a range is at most this many chunks (small chunks: many ranges)
PREFETCH = 1  # ranges of a CSV file read ahead of the one being cut (a second one bought no time)
UPLOAD_BLOCK = 4 << 20  # bytes of results per staged block
UPLOAD_QUEUE = 2  # blocks waiting for the upload thread: the results never sit in memory whole
PARQUET_MEDIA = "application/x-parquet"
FILE_LOG_FORMAT = 1  # a logged file's manifest (_FileLog)
FILES_FOLDER = "files"  # predictions/<model>/files/<request id>/: a logged file's copies
ID_COLUMN = "prediction_id"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RESULTS = {"csv": ("csv", "text/csv"), "jsonl": ("csv", "text/csv"), "parquet": ("parquet", PARQUET_MEDIA)}
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
    """One pass over the file: each chunk is scored into the results file and its rows go to the prediction
    log (segments of whole chunks, written on helper threads); a bad row rejects the file, and the segments
    written before it are deleted, so a rejected file leaves nothing in the log."""
    loaded = _model(cache, batch)
    rid = request_id(batch.path, stream.etag)
    extension, media = RESULTS[batch.fmt]
    target = paths.batch_result(batch.path, extension)
    file_log = _FileLog(storage, loaded, batch, rid, started, log_sample_rate, chunk_bytes) \
        if log_sample_rate > 0 else None
    with _ResultsUpload(storage, target, extension, media) as results:
        try:
            if file_log is not None:
                file_log.keep_input(stream.etag)
            rows = _ChunkScorer(loaded, rid, results).run(_chunks(stream, batch.fmt, loaded.signature, chunk_bytes))
            if not rows:
                raise Rejected("rows", "the file has no rows to score")
        except (Rejected, Conflict):
            if file_log is not None:
                file_log.discard()
            raise
        results_etag = results.finish()
        if file_log is not None:
            file_log.finish(target, results_etag, rows)
        storage.delete(paths.SCORING_RESULTS, paths.batch_rejection(batch.path))  # a report of an older version
        log.info("batch scoring: %s/%s -> %s/%s (%d rows, version %d)", paths.SCORING_REQUESTS, batch.path,
                 paths.SCORING_RESULTS, target, rows, loaded.version)
    return {"outcome": "scored", "path": batch.path, "rows": rows, "model": loaded.name,
            "version": loaded.version, "request_id": rid, "results": f"{paths.SCORING_RESULTS}/{target}"}


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
class _Scored:
    """One chunk after the model ran: its rows, its prediction id column (None without one) and the session's
    outputs."""

    rows: int
    ids: pa.Array | None
    labels: np.ndarray
    probabilities: np.ndarray | None
    label_index: np.ndarray | None = None


class _ChunkScorer:
    """Scores chunks on WORKERS threads (the CSV parse, the feeds and onnxruntime release the GIL) and finishes
    them in file order on the caller's thread: row numbers, prediction ids, the results file."""

    def __init__(self, loaded: LoadedModel, rid: str, results: _ResultsUpload) -> None:
        self._loaded, self._rid, self._results = loaded, rid, results
        self.rows = 0

    def run(self, chunks: Generator[pa.RecordBatch | _Block, None, None]) -> int:
        """Score every chunk; the rows scored. Raises Rejected for the first problem in file order."""
        pending: deque[Future[_Scored]] = deque()
        with closing(chunks), ThreadPoolExecutor(WORKERS, thread_name_prefix="batch-score") as pool:
            try:
                while True:
                    try:
                        chunk = next(chunks, None)
                    except BaseException:
                        self._drain(pending)  # a chunk read before may hold the file's first problem
                        raise
                    if chunk is None:
                        break
                    pending.append(pool.submit(self._score, chunk))
                    if len(pending) > WORKERS:  # one chunk waits beside each busy worker: bounded memory
                        self._finish(pending.popleft())
                self._drain(pending)
            finally:
                for future in pending:
                    future.cancel()
        return self.rows

    def _drain(self, pending: deque[Future[_Scored]]) -> None:
        while pending:
            self._finish(pending.popleft())

    def _score(self, chunk: pa.RecordBatch | _Block) -> _Scored:
        parsed = _parsed(chunk, self._loaded.signature)
        return _Scored(parsed.rows, parsed.ids, *run_model(self._loaded, parsed.feeds, parsed.rows, parsed.matrix))

    def _finish(self, future: Future[_Scored]) -> None:
        start = self.rows
        try:
            scored = future.result()
            ids = _chunk_ids(scored, self._rid, start)
        except BadRequest as exc:  # rows in its message count from the chunk's first row
            message = _ROW.sub(lambda m: f"row {int(m.group(1)) + start}", exc.message)
            raise Rejected("values", message) from None
        self._results.add(scored.labels, scored.probabilities, self._loaded.signature.class_keys, ids,
                          self._loaded.version, scored.label_index)
        self.rows += scored.rows


class _Parsed(NamedTuple):
    """One chunk's rows as the model takes them: their count, the file's prediction id column (None without one),
    the session feeds and, from the native reader, the packed graph's matrix."""

    rows: int
    ids: pa.Array | None
    feeds: dict[str, np.ndarray]
    matrix: np.ndarray | None = None


def _parsed(chunk: pa.RecordBatch | _Block, signature: Signature) -> _Parsed:
    """A chunk's rows as the model takes them. Raises BadRequest naming the row within the chunk, Rejected when
    pyarrow cannot read a block."""
    parsed = chunk.parse(signature) if isinstance(chunk, _Block) else chunk
    if isinstance(parsed, ScoringRequest):  # the native reader's matrix: feeds and packed matrix, checked
        return _Parsed(parsed.rows, None, parsed.inputs, parsed.matrix)
    ids = parsed.column(ID_COLUMN) if ID_COLUMN in parsed.schema.names else None
    return _Parsed(parsed.num_rows, ids, chunk_feeds(parsed, signature))


def chunk_feeds(batch: pa.RecordBatch, signature: Signature) -> dict[str, Any]:
    """Session feeds of one chunk. Raises BadRequest naming the row within the chunk."""
    names = [n for n in batch.schema.names if n != ID_COLUMN]
    return arrow_bodies.table_request(batch.select(names), signature).inputs


def _chunk_ids(scored: _Scored, rid: str, start: int) -> Sequence[str]:
    column = scored.ids
    if column is None:
        return prediction_log.DefaultIds(rid, scored.rows, start)
    if column.null_count:
        raise BadRequest(f"column {ID_COLUMN!r} row {column.is_null().index(True).as_py()} is empty: "
                         "give every row its id, or leave the column out for ids made for you")
    ids = column.cast(pa.string()).to_pylist()
    _check_ids(ids, f"column {ID_COLUMN!r}")
    return ids


class _FileLog:
    """The prediction log of one scored file: not its rows encoded again, but server-side copies of the file (made
    before its first byte is read, of the ETag that is scored) and of its results (once committed), and a
    manifest that names them, written last: until then no reader sees the file's rows. logged_batches reads them
    back as the rows of segments. A retry writes the same names (the request id and the moment this version's
    scoring first started), so nothing is logged twice; discard() deletes all three (the file is rejected)."""

    def __init__(self, storage: Storage, loaded: LoadedModel, batch: BatchFile, rid: str, started: float,
                 sample_rate: float, chunk_bytes: int) -> None:
        self._storage, self._loaded, self._batch, self._rid = storage, loaded, batch, rid
        self._started, self._sample_rate, self._chunk_bytes = started, sample_rate, chunk_bytes
        folder = f"{loaded.name}/{FILES_FOLDER}/{rid}"  # beside the dated folders monitoring lists, never in one
        self.inputs = f"{folder}/input{batch.name[batch.name.rfind('.'):].lower()}"
        self.results = f"{folder}/results.{RESULTS[batch.fmt][0]}"
        self.manifest = prediction_log.log_blob_path(loaded.name, started, rid, suffix=prediction_log.FILE_SUFFIX)

    def keep_input(self, etag: str) -> None:
        """Copy the file as it is scored. Raises Conflict when it is no longer that version."""
        self._storage.copy(paths.SCORING_REQUESTS, self._batch.path, paths.PREDICTIONS, self.inputs, if_match=etag)

    def finish(self, results: str, results_etag: str, rows: int) -> None:
        """Copy the committed results and write the manifest: the file's rows are in the log from here on."""
        self._storage.copy(paths.SCORING_RESULTS, results, paths.PREDICTIONS, self.results, if_match=results_etag)
        loaded = self._loaded
        session = loaded.session
        manifest = {
            "format": FILE_LOG_FORMAT, "request_id": self._rid, "model": loaded.name, "version": loaded.version,
            "timestamp": self._started, "rows": rows, "sample_rate": self._sample_rate,
            "inputs": {"path": self.inputs, "format": self._batch.fmt, "chunk_bytes": self._chunk_bytes},
            "results": {"path": self.results, "format": RESULTS[self._batch.fmt][0]},
            # what parse_signature reads from the artifact: the reader needs no registry and no model
            "signature": {"metadata": session.get_modelmeta().custom_metadata_map.get(SIGNATURE_KEY),
                          "inputs": {i.name: i.type for i in session.get_inputs()},
                          "outputs": [o.name for o in session.get_outputs()]},
        }
        self._storage.write_json(paths.PREDICTIONS, self.manifest, manifest)

    def discard(self) -> None:
        """Delete the manifest and the copies, this run's and an earlier attempt's."""
        for name in (self.manifest, self.inputs, self.results):
            self._storage.delete(paths.PREDICTIONS, name)


def logged_batches(storage: Storage, manifest: bytes) -> Iterator[pa.RecordBatch]:
    """The rows a scored file's manifest logs, as shared.prediction_segments' record batches (one a chunk, in file
    order): the copied file read again by the readers that scored it, with the model's signature, beside the
    copied results (prediction ids and outputs as the results file has them, probabilities as float64: the
    float32 values widened, as a JSON line has them). With a sample rate below 1 a row is kept by a hash of the
    request id and its row number, the same rows on every read.

    Nothing when a copy is gone (deleted since the manifest was listed). Raises ValueError for a manifest or copy
    it cannot read."""
    doc = _manifest(manifest)
    try:
        signature = parse_signature(doc.signature["metadata"], doc.signature["inputs"], doc.signature["outputs"])
        inputs = storage.open_read(paths.PREDICTIONS, doc.inputs["path"])
        results = storage.open_read(paths.PREDICTIONS, doc.results["path"])
    except NotFound:
        return
    except (ModelArtifactError, KeyError, TypeError) as exc:
        raise ValueError(f"logged file manifest: {exc}") from None
    outputs = _ResultsReader(results, str(doc.results["format"]), signature)
    start = 0
    try:
        for chunk in _chunks(inputs, str(doc.inputs["format"]), signature, int(doc.inputs["chunk_bytes"])):
            parsed = _parsed(chunk, signature)
            table = _logged_table(doc, signature, parsed, outputs.take(parsed.rows), start)
            start += parsed.rows
            if table.num_rows:
                yield from table.combine_chunks().to_batches()
    except (Rejected, BadRequest) as exc:  # it was scored: a copy that reads otherwise is not that file
        raise ValueError(f"logged file {doc.inputs['path']}: {exc}") from None


class _Manifest(NamedTuple):
    request_id: str
    model: str
    version: int
    timestamp: float
    sample_rate: float
    inputs: dict[str, Any]
    results: dict[str, Any]
    signature: dict[str, Any]


def _manifest(data: bytes) -> _Manifest:
    try:
        doc = json.loads(data)
        if doc.get("format") != FILE_LOG_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FILE_LOG_FORMAT}")
        return _Manifest(str(doc["request_id"]), str(doc["model"]), int(doc["version"]), float(doc["timestamp"]),
                         float(doc["sample_rate"]), dict(doc["inputs"]), dict(doc["results"]),
                         dict(doc["signature"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"logged file manifest: {exc}") from None


def _logged_table(doc: _Manifest, signature: Signature, parsed: _Parsed, outputs: pa.Table, start: int) -> pa.Table:
    feeds = parsed.feeds
    ids = outputs.column("prediction_id").combine_chunks()
    predictions = outputs.column("prediction").to_numpy(zero_copy_only=False)
    probabilities = None
    if signature.task == "classification" and f"probability_{signature.class_keys[0]}" in outputs.column_names:
        probabilities = np.column_stack([outputs.column(f"probability_{key}").to_numpy(zero_copy_only=False)
                                         for key in signature.class_keys])
    if doc.sample_rate < 1.0:
        keep = _kept(doc.request_id, start, parsed.rows, doc.sample_rate)
        feeds = {name: values[keep] for name, values in feeds.items()}
        ids, predictions = ids.filter(pa.array(keep)), predictions[keep]
        probabilities = None if probabilities is None else probabilities[keep]
    logged: dict[str, Any] = {"predictions": predictions}
    if probabilities is not None:
        logged.update(probabilities=probabilities, probability_classes=signature.class_keys)
    return prediction_segments.segment_table(doc.model, doc.version, doc.request_id, doc.timestamp, ids, feeds,
                                             logged)


def _kept(request_id: str, start: int, rows: int, rate: float) -> np.ndarray:
    """Which of rows start..start+rows a sample of `rate` keeps: splitmix64 of the row number and the request id's
    hash, a uniform draw per row that does not depend on how the file was cut into chunks."""
    seed = np.uint64(int(hashlib.sha256(request_id.encode()).hexdigest()[:16], 16))
    with np.errstate(over="ignore"):  # the mixing wraps around 2**64 by design
        x = np.arange(start, start + rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + seed
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53 < rate


class _ResultsReader:
    """A results file (CSV or Parquet, as _ResultsUpload writes it) read back in runs of rows."""

    def __init__(self, stream: BlobStream, fmt: str, signature: Signature) -> None:
        source = io.BufferedReader(stream, buffer_size=READ_BUFFER)
        if fmt == "parquet":
            self._batches: Iterator[pa.RecordBatch] = pq.ParquetFile(source).iter_batches(
                batch_size=PARQUET_BATCH_ROWS)
        else:
            label = pa.float64() if signature.task != "classification" else (
                pa.string() if isinstance(signature.classes[0], str) else pa.int64())
            types = {"prediction_id": pa.string(), "prediction": label, "model_version": pa.int64(),
                     **{f"probability_{key}": pa.float64() for key in signature.class_keys}}
            self._batches = iter(pa_csv.open_csv(source, read_options=pa_csv.ReadOptions(block_size=READ_BUFFER),
                                                 convert_options=pa_csv.ConvertOptions(
                                                     column_types=types, strings_can_be_null=False)))
        self._held: list[pa.RecordBatch] = []
        self._rows = 0

    def take(self, rows: int) -> pa.Table:
        """The next `rows` rows. Raises ValueError when the file ends first."""
        while self._rows < rows:
            batch = next(self._batches, None)
            if batch is None:
                raise ValueError(f"the logged results end {rows - self._rows} rows short of the file's")
            self._held.append(batch)
            self._rows += batch.num_rows
        table = pa.Table.from_batches(self._held)
        self._held = table.slice(rows).to_batches()
        self._rows -= rows
        return table.slice(0, rows)



# ---------------------------------------------------------------------------------------------
# Readers: feature (and id) columns only, typed by the signature, one record batch (or CSV block) per chunk


_READ_ERRORS = (pa.ArrowException, ValueError, OSError, UnicodeDecodeError, csv.Error)


def _unreadable(exc: BaseException, fmt: str) -> Rejected:
    return Rejected("format", f"the file cannot be read as {arrow_bodies.FORMAT_LABELS.get(fmt, fmt)}: "
                              f"{str(exc)[:300]}")


def _chunks(stream: BlobStream, fmt: str, signature: Signature,
            chunk_bytes: int) -> Generator[pa.RecordBatch | _Block, None, None]:
    """The file's chunks; Rejected for a file pyarrow cannot read (its own words).

    A CSV file is cut into blocks of whole lines (parsed by the workers, both cores) wherever that is
    exact; Parquet, JSON Lines and any CSV from its first quote on are read by pyarrow's streaming readers.
    """
    try:
        if fmt == "csv":
            yield from _csv_blocks(stream, signature, chunk_bytes)
            return
        buffered = io.BufferedReader(stream, buffer_size=READ_BUFFER)
        yield from {"parquet": _parquet_chunks, "jsonl": _jsonl_chunks}[fmt](buffered, signature, chunk_bytes)
    except _READ_ERRORS as exc:
        if isinstance(exc.__context__, PipelineError):  # storage failed under pyarrow's read (overwritten, down)
            raise exc.__context__ from None
        raise _unreadable(exc, fmt) from None


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


@dataclass(frozen=True)
class _CsvLayout:
    """How to read the rows of a CSV file after its header: its column names, the columns kept and their types."""

    names: list[str]
    wanted: list[str]
    types: dict[str, pa.DataType]

    @property
    def numeric(self) -> bool:
        """Every column is a float feature: the native reader may read the rows (_Block.parse)."""
        return len(self.wanted) == len(self.names) and all(self.types[n] == pa.float64() for n in self.names)

    def read_options(self, block_size: int) -> pa_csv.ReadOptions:
        return pa_csv.ReadOptions(column_names=self.names, block_size=block_size, use_threads=False)

    def convert_options(self) -> pa_csv.ConvertOptions:
        return pa_csv.ConvertOptions(column_types=self.types, include_columns=self.wanted, null_values=[""],
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)


@dataclass(frozen=True)
class _Block:
    """Whole CSV lines of the file (data[start:end]), none of them the header, that pyarrow reads the same whether
    it starts here or at the top of the file (_plain)."""

    data: bytes | bytearray
    start: int
    end: int
    layout: _CsvLayout

    def parse(self, signature: Signature) -> pa.RecordBatch | ScoringRequest:
        """The block's rows: the request of the native reader's matrix when it reads them and the values fit the
        inputs, else a batch of pyarrow's reader. Raises Rejected when pyarrow cannot read them."""
        if self.layout.numeric:
            found = native_numbers.csv_matrix(self.data, self.start, len(self.layout.names), self.end)
            if found is not None:  # else pyarrow reads the block, and names the problem
                order = _column_order(self.layout.names, signature)
                request = None if order is None else matrix_request(found.values, order, signature, found.complete,
                                                                    None)
                # None: an optional input left out (the batch's checks fill it), or a value beyond a float32
                # input (they name it)
                return _numeric_batch(found, self.layout) if request is None else request
        size = self.end - self.start
        try:
            table = pa_csv.read_csv(pa.py_buffer(self.data).slice(self.start, size),
                                    read_options=self.layout.read_options(size + 1), parse_options=_CSV_PARSE,
                                    convert_options=self.layout.convert_options())
        except _READ_ERRORS as exc:
            raise _unreadable(exc, "csv") from None
        batches = table.combine_chunks().to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


_CSV_PARSE = pa_csv.ParseOptions(newlines_in_values=True)


def _numeric_batch(matrix: native_numbers.Matrix, layout: _CsvLayout) -> pa.RecordBatch:
    """The native reader's matrix as the batch pyarrow's reader makes of the same lines: float64 columns (views
    of the matrix's) in the wanted order, an empty cell a null (the reader's only NaN: it takes finite numbers)."""
    columns = [matrix.values[:, layout.names.index(name)] for name in layout.wanted]
    arrays = [pa.array(c, mask=None if matrix.complete else np.isnan(c)) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=layout.wanted)


def _csv_blocks(stream: BlobStream, signature: Signature,
                chunk_bytes: int) -> Generator[pa.RecordBatch | _Block, None, None]:
    with closing(_ranges(stream, min(RANGE_BYTES, RANGES_PER_CHUNK * chunk_bytes))) as ranges:
        head = bytearray()
        for piece in ranges:  # up to the header row's end (as far as the first READ_BUFFER bytes)
            head += piece
            if b"\n" in piece or len(head) >= READ_BUFFER:
                break
        end = head.find(b"\n")
        layout = _csv_layout(bytes(head[: end if end >= 0 else len(head)]), signature)
        stopped: int | None = 0  # a header row pyarrow must find itself (no line end, or one in quotes)
        if end >= 0 and not head.count(b'"', 0, end) % 2:
            del head[: end + 1]  # in place: the rows after the header are not copied
            pieces, head = _prepended(head, ranges), bytearray()  # the first range lives as long as its blocks
            stopped = yield from _line_blocks(pieces, end + 1, layout, chunk_bytes)
    if stopped is not None:
        yield from _streamed_csv(stream.reopen(), stopped, layout, chunk_bytes, header_row=not stopped)


def _prepended(first: bytearray, rest: Iterator[bytes | bytearray]) -> Iterator[bytes | bytearray]:
    pieces = [first]
    del first
    yield pieces.pop()  # held by no frame once its blocks are done
    yield from rest


def _csv_layout(header: bytes, signature: Signature) -> _CsvLayout:
    columns = next(csv.reader([header.decode("utf-8-sig")]), [])
    wanted = _wanted([h.strip() for h in columns], signature)
    if any(h != h.strip() for h in columns):
        raise Rejected("columns", "column names in the header row have blanks around them; remove them")
    return _CsvLayout(columns, wanted, _types(signature))


def _line_blocks(ranges: Iterator[bytes | bytearray], offset: int, layout: _CsvLayout,
                 chunk_bytes: int) -> Generator[_Block, None, int | None]:
    """The file from `offset` (a line start) as blocks of about chunk_bytes of whole lines; returns None at the end
    of the file, or the offset of the first line it cannot vouch for (the streaming reader goes on there).

    A block is a slice of its range; only the one that starts with the line a range boundary cut is copied.
    """
    carry = b""  # the start of a line the previous range cut
    for data in ranges:
        start, end = 0, _cut(data, 0, chunk_bytes - len(carry))
        while end > start:
            block = _Block(carry + data[start:end], 0, len(carry) + end - start, layout) if carry else \
                _Block(data, start, end, layout)
            if not _plain(block):  # pyarrow's streaming reader decides where its rows end
                return offset
            yield block
            offset += block.end - block.start
            carry, start, end = b"", end, _cut(data, end, chunk_bytes)
        carry += data[start:]
        if len(carry) > max(chunk_bytes, READ_BUFFER):  # a line that long: the streaming reader refuses it
            return offset
    if carry:  # the last line, without a line end
        last = _Block(carry, 0, len(carry), layout)
        if not _plain(last):
            return offset
        yield last
    return None


def _cut(data: bytes | bytearray, start: int, size: int) -> int:
    """Where a block from `start` ends: after the last line end within `size` bytes, else after the first one
    beyond (a line longer than a block); `start` when no line ends after it."""
    limit = start + max(size, 1)
    end = data.rfind(b"\n", start, limit) + 1 or data.find(b"\n", limit) + 1
    return max(end, start)


def _plain(block: _Block) -> bool:
    """True when every line end in the block that pyarrow reads as a row end does so wherever it starts reading:
    its quotes (if any) open and close whole fields in pairs, so a line end between pairs is outside quotes,
    and no carriage return stands alone (kept for the streaming reader: rare, and a row end of its own)."""
    data, start, end = block.data, block.start, block.end
    text = np.frombuffer(data, np.uint8, end - start, start)  # the checks below scan it only when they must
    if data.find(b"\r", start, end) >= 0 and not _line_ends_paired(text):
        return False
    return data.find(b'"', start, end) < 0 or _quotes_paired(text)


def _line_ends_paired(text: np.ndarray) -> bool:
    """True when every carriage return is the first half of a \\r\\n."""
    returns = np.flatnonzero(text == ord("\r"))
    return bool(returns[-1] + 1 < len(text) and (text[returns + 1] == ord("\n")).all())


_FIELD_EDGES = np.frombuffer(b',\n\r"', np.uint8)


def _quotes_paired(text: np.ndarray) -> bool:
    """True when the quotes, counted in pairs, open right after a field's start and close right before its end
    (RFC 4180; a doubled quote inside a field is a closing and an opening quote side by side). A quote anywhere
    else is a plain character to pyarrow, and would make the count lie about which line ends are row ends."""
    quotes = np.flatnonzero(text == ord('"'))
    if len(quotes) % 2:  # the block would end inside a quoted field
        return False
    opening, closing = quotes[0::2], quotes[1::2]
    before = text[opening[opening > 0] - 1]  # the block starts at a row start: a quote there opens a field
    after = text[closing[closing < len(text) - 1] + 1]
    return bool(np.isin(before, _FIELD_EDGES).all() and np.isin(after, _FIELD_EDGES).all())


def _streamed_csv(stream: BlobStream, offset: int, layout: _CsvLayout, chunk_bytes: int, *,
                  header_row: bool) -> Iterator[pa.RecordBatch]:
    """The rows from `offset` (a line start) on, read by pyarrow's streaming reader (quotes may hold line ends).

    Its blocks hold a row as long as the blocks of whole lines do (it refuses a row longer than a block)."""
    stream.seek(offset)
    size = max(chunk_bytes, READ_BUFFER)
    options = pa_csv.ReadOptions(block_size=size) if header_row else layout.read_options(size)
    yield from pa_csv.open_csv(io.BufferedReader(stream, buffer_size=READ_BUFFER), read_options=options,
                               parse_options=_CSV_PARSE, convert_options=layout.convert_options())


def _ranges(stream: BlobStream, size: int) -> Generator[bytes | bytearray, None, None]:
    """The blob in consecutive ranges of `size` bytes, fetched on a helper thread up to PREFETCH ranges ahead."""

    def fetch(offset: int) -> bytes | bytearray:
        return stream.read_range(offset, size)

    offsets = iter(range(0, stream.size, size))
    with ThreadPoolExecutor(1, thread_name_prefix="batch-read") as reader:
        pending = deque(reader.submit(fetch, offset) for offset in itertools.islice(offsets, PREFETCH))
        try:
            while pending:
                data = pending.popleft().result()
                following = next(offsets, None)
                if following is not None:
                    pending.append(reader.submit(fetch, following))
                yield data
        finally:
            for future in pending:
                future.cancel()


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


class _ResultsUpload(io.RawIOBase):
    """The results file, encoded chunk by chunk (CSV with one header row, or Parquet with a row group per chunk)
    and uploaded while the file is scored: the encoder writes here, every UPLOAD_BLOCK bytes go to a thread
    that stages them (Storage.write_chunks), and the blob appears, whole, with finish(). Leaving the block
    without finish() (a rejected or failed file) abandons the upload: the blob stays as it was. Memory holds
    at most UPLOAD_QUEUE blocks waiting and those being staged (storage.STAGED_AT_ONCE), whatever the file's size."""

    def __init__(self, storage: Storage, target: str, extension: str, media: str) -> None:
        super().__init__()
        self._extension = extension
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[bytes] = []  # what is written, until UPLOAD_BLOCK bytes are staged as one block
        self._buffered = 0
        self._written = 0
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=UPLOAD_QUEUE)
        self._abandoned = threading.Event()
        self._failure: BaseException | None = None
        self._etag = ""
        self._thread = threading.Thread(target=self._upload, args=(storage, target, media), daemon=True,
                                        name="batch-results")
        self._thread.start()

    # the file pyarrow's writers write to
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer.append(bytes(data))  # a copy: pyarrow may reuse the buffer it passes
        self._buffered += len(data)
        self._written += len(data)
        if self._buffered >= UPLOAD_BLOCK:
            self._put(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0
        return len(data)

    def tell(self) -> int:
        return self._written

    def add(self, predictions: np.ndarray, probabilities: np.ndarray | None, class_keys: Sequence[str],
            ids: Sequence[str], version: int, label_index: np.ndarray | None) -> None:
        """One chunk's results rows (arrow_bodies.results_table's columns)."""
        if self._extension == "csv":  # laid out natively, as pyarrow's CSV writer writes them
            self.write(arrow_bodies.results_csv(predictions, probabilities, class_keys, ids, version, label_index,
                                                header=not self._written))
            return
        table = arrow_bodies.results_table(predictions, probabilities, class_keys, ids, version, label_index)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self, table.schema)
        self._writer.write_table(table)

    def finish(self) -> str:
        """Encode the rest and commit the blob; its ETag. Raises what the upload raised."""
        if self._writer is not None:
            self._writer.close()
        self._put(b"".join(self._buffer))
        self._put(None)
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._etag

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():  # not finished: abandon the staged blocks
            self._abandoned.set()
            self._thread.join()

    def _put(self, block: bytes | None) -> None:
        while True:
            try:
                self._blocks.put(block, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():  # the upload failed: say why instead of waiting for ever
                    raise self._failure or StorageUnreachable("the results upload stopped") from None

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                block = self._blocks.get(timeout=0.2)
            except queue.Empty:
                block = b""
            if self._abandoned.is_set():
                raise _Abandoned  # before the commit: the blob stays as it was
            if block is None:
                return
            if block:
                yield block

    def _upload(self, storage: Storage, target: str, media: str) -> None:
        try:
            self._etag = storage.write_chunks(paths.SCORING_RESULTS, target, self._chunks(), content_type=media)
        except _Abandoned:
            pass
        except BaseException as exc:  # re-raised on the scoring thread (finish, _put)
            self._failure = exc


class _Abandoned(Exception):
    """Ends an abandoned results upload before its commit."""


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
