"""Columnar prediction log segments: many scored rows of one request as one Parquet blob.

A batch-scored file logs up to millions of rows; as JSON Lines (shared.prediction_log) that is about 1 KB a
row of 30 numeric inputs and ~17 s per million rows to write. Segments (50-130 bytes a row, ~1.5 s of CPU per
million) sit next to the JSON Lines blobs, named the same way: `predictions/<model>/<YYYY-MM-DD>/<HHMMSS>-
<tag>.parquet`. Batch scoring wrote them until it logged a file as copies of the file and its results named by
a manifest (`.file.json`, shared.batch_scoring.logged_batches), which log_batches reads as a segment's record
batches; segments stay the log's columnar row format (and older logs hold them). Every reader of the log
(shared.monitoring.window, shared.replay, feedback joins through the monitoring window) reads all three and
gets the same rows from any.

A segment holds the fields of the JSON line, one Parquet column per field (nested fields as struct
columns), one row per scored row, in row order:

    request_id     string                      the request's id (one value per segment)
    prediction_id  string                      the row's id (names.PREDICTION_ID)
    model          string                      the model name
    version        int64                       the model version that scored the row
    timestamp      timestamp[ms, UTC]          when the request was scored (the line's ISO 8601 string)
    inputs         struct<feature: ...>        every model input, in signature order, as the model saw
                                               it: float32/float64 (null where the line has null: a
                                               missing value), int64, or string (categorical, the
                                               model's missing marker as the line has it)
    outputs        struct<predictions: ..., probabilities: struct<class: float>>
                                               predictions: the label (string or int64) or the
                                               regression value (float, null for NaN); probabilities
                                               (classifiers only): one float column per class key

float32 columns carry the model's float32 values; the JSON line widens them to the same float64 number.
The file's key-value metadata has `mlops.prediction_log` = FORMAT_VERSION. Columns are compressed with
zstd; the request, model, version and timestamp columns, string inputs and labels are dictionary encoded
(a few distinct values), numbers are not (a dictionary of distinct floats only costs time).

pyarrow is imported with this module: the HTTP scoring path never imports it (shared.prediction_log
stays light); batch scoring and monitoring already load pyarrow.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.prediction_log import FILE_SUFFIX, SEGMENT_SUFFIX, DefaultIds, is_columnar

if TYPE_CHECKING:
    from shared.storage import Storage

SUFFIX = SEGMENT_SUFFIX
FORMAT_KEY = b"mlops.prediction_log"
FORMAT_VERSION = b"1"
READ_BATCH_ROWS = 65_536  # rows a reader holds as Arrow columns at a time
COMPRESSION_LEVEL = 1  # zstd: 1.4-2.4x smaller than snappy on logged inputs for ~0.3 s more CPU a million rows
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIXED = ("request_id", "prediction_id", "model", "version", "timestamp")


def is_segment(path: str) -> bool:
    """True for a segment's blob name, False for a JSON Lines blob."""
    return path.endswith(SUFFIX)


def encode(tables: Sequence[pa.Table]) -> bytes:
    """Rows made by segment_table (one or more tables of one request, same schema) as one segment of one row group.

    Chunked columns are written as they are: the tables are never copied into one.
    """
    table = pa.concat_tables(tables)
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, compression="zstd", compression_level=COMPRESSION_LEVEL,
                          use_dictionary=_dictionary_columns(table.schema),
                          write_statistics=["version", "timestamp"]) as writer:  # what a reader may skip by
        # one row group: groups of 10,000 rows took 1.5x the CPU of 65,536-row ones
        writer.write_table(table, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


def segment_table(
    model: str, version: int, request_id: str, at: float, prediction_ids: Sequence[str] | pa.Array,
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, Any],
) -> pa.Table:
    """Scored rows as a segment's table (see encode): the arguments of prediction_log.columnar_lines (inputs as
    name -> [N, 1] arrays; outputs with predictions [N] and probabilities [N, classes], class keys in
    probability_classes). prediction_ids may already be an Arrow string column (batch scoring has built it
    for the results file)."""
    rows = len(prediction_ids)
    ids = prediction_ids if isinstance(prediction_ids, pa.Array) else _id_array(prediction_ids)
    out_names, out_arrays = ["predictions"], [_array(np.asarray(outputs["predictions"]).reshape(-1))]
    probabilities = outputs.get("probabilities")
    if probabilities is not None:
        keys = [str(k) for k in outputs.get("probability_classes") or ()]
        matrix = np.asarray(probabilities)
        out_names.append("probabilities")
        out_arrays.append(_struct([_array(matrix[:, k]) for k in range(len(keys))], keys, rows))
    columns = {
        "request_id": pa.repeat(pa.scalar(request_id, pa.string()), rows),
        "prediction_id": ids,
        "model": pa.repeat(pa.scalar(model, pa.string()), rows),
        "version": pa.repeat(pa.scalar(version, pa.int64()), rows),
        "timestamp": pa.repeat(pa.scalar(_milliseconds(at), pa.timestamp("ms", tz="UTC")), rows),
        "inputs": _struct([_array(np.asarray(v).reshape(-1)) for v in inputs.values()], list(inputs), rows),
        "outputs": _struct(out_arrays, out_names, rows),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({FORMAT_KEY: FORMAT_VERSION})


def _milliseconds(at: float) -> int:
    """Epoch milliseconds of the moment the JSON line spells (microseconds rounded, then cut to ms)."""
    return (datetime.fromtimestamp(at, tz=UTC) - _EPOCH) // timedelta(milliseconds=1)


def _id_array(ids: Sequence[str]) -> pa.Array:
    if isinstance(ids, DefaultIds):  # joined in Arrow: never made as a million Python strings
        rows = pa.array(np.arange(ids.start, ids.start + ids.rows, dtype=np.int64)).cast(pa.string())
        return pc.binary_join_element_wise(f"{ids.request_id}-", rows, "")
    return pa.array(list(ids), type=pa.string())


def _array(values: np.ndarray) -> pa.Array:
    """One column as the JSON line has it: NaN is null (the line's null), strings stay strings."""
    if values.dtype.kind == "f":
        return pa.array(values, from_pandas=True)  # from_pandas: NaN -> null
    if values.dtype.kind in "iub":
        return pa.array(values)
    return pa.array(values, type=pa.string(), from_pandas=True)


def _struct(arrays: list[pa.Array], names: list[str], rows: int) -> pa.StructArray:
    if not arrays:  # a struct without fields still has a length
        return pa.array([{}] * rows, type=pa.struct([]))
    return pa.StructArray.from_arrays(arrays, names)


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Column paths worth a dictionary: the per-request constants and strings (categories, labels)."""
    paths = ["request_id", "model", "version", "timestamp"]
    for parent in ("inputs", "outputs"):
        for field in schema.field(parent).type:
            if pa.types.is_string(field.type):
                paths.append(f"{parent}.{field.name}")
    return paths


# ---------------------------------------------------------------------------------------------
# Reading


def batches(data: bytes) -> Iterator[pa.RecordBatch]:
    """A segment's rows as record batches of at most READ_BATCH_ROWS rows. Raises ValueError if it is no segment."""
    try:
        source = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a prediction log segment: {exc}") from None
    missing = [name for name in _FIXED if name not in source.schema_arrow.names]
    if missing:
        raise ValueError(f"not a prediction log segment: no columns {missing}")
    try:
        yield from source.iter_batches(batch_size=READ_BATCH_ROWS)
    except (pa.ArrowException, OSError) as exc:  # a damaged page
        raise ValueError(f"damaged prediction log segment: {exc}") from None


def log_batches(storage: Storage, path: str, data: bytes) -> Iterator[pa.RecordBatch]:
    """The record batches of a columnar log blob (prediction_log.is_columnar), told by its name: a segment's, or
    those of a batch-scored file through its manifest (shared.batch_scoring.logged_batches reads the copies it
    names, in batches of a chunk). Raises ValueError for a blob that is neither, or damaged."""
    if path.endswith(FILE_SUFFIX):
        from shared import batch_scoring  # it imports this module; loaded by the first manifest read

        yield from batch_scoring.logged_batches(storage, data)
        return
    yield from batches(data)


def struct_fields(batch: pa.RecordBatch, name: str) -> dict[str, pa.Array]:
    """The fields of a struct column (inputs, outputs, outputs' probabilities) by name; {} when absent."""
    if name not in batch.schema.names:
        return {}
    return _fields(batch.column(name))


def _fields(column: pa.Array) -> dict[str, pa.Array]:
    if not pa.types.is_struct(column.type):
        return {}
    assert isinstance(column, pa.StructArray)
    return {column.type.field(i).name: column.field(i) for i in range(column.type.num_fields)}


def probability_fields(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Class key -> probability column; {} for a regressor's segment."""
    outputs = struct_fields(batch, "outputs")
    return _fields(outputs["probabilities"]) if "probabilities" in outputs else {}


def epoch_seconds(batch: pa.RecordBatch) -> np.ndarray:
    """The rows' timestamps as float64 epoch seconds, as the JSON line's ISO string reads (NaN for null)."""
    stamps = batch.column("timestamp").cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
    # ms / 1000 and the ISO string's microseconds / 10**6 are both the correctly rounded same number
    return np.asarray(stamps.to_numpy(zero_copy_only=False), dtype=np.float64) / 1000.0  # null -> NaN


def rows(data: bytes) -> Iterator[dict[str, Any]]:
    """The segment's rows as the JSON line of each would read (json.loads): same keys, values and order."""
    for batch in batches(data):
        yield from batch_rows(batch)


def blob_rows(path: str, data: bytes, storage: Storage | None = None) -> Iterator[dict[str, Any]]:
    """The rows of any prediction log blob, told by its name: a segment's, a scored file's (its manifest: the
    copies it names are read from storage), or each line of JSON Lines (strict: a line that is no JSON object
    raises ValueError)."""
    if is_columnar(path):
        if storage is None and not is_segment(path):
            raise ValueError(f"{path}: a scored file's rows are read from storage; pass it")
        for batch in log_batches(cast("Storage", storage), path, data):
            yield from batch_rows(batch)
        return
    for line in data.splitlines():
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"prediction log line is not a JSON object: {line[:80]!r}")
        yield row


def batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """One batch's rows as JSON line dicts (see rows())."""
    stamps = [None if s is None else s.isoformat(timespec="milliseconds")
              for s in batch.column("timestamp").to_pylist()]
    inputs = _dict_rows(batch, "inputs")
    outputs = _dict_rows(batch, "outputs")
    fixed = [batch.column(name).to_pylist() for name in ("request_id", "prediction_id", "model", "version")]
    return [{"request_id": rid, "prediction_id": pid, "model": model, "version": version, "timestamp": stamp,
             "inputs": row_inputs, "outputs": row_outputs}
            for rid, pid, model, version, stamp, row_inputs, row_outputs
            in zip(*fixed, stamps, inputs, outputs, strict=True)]


def _dict_rows(batch: pa.RecordBatch, name: str) -> list[dict[str, Any]]:
    if name not in batch.schema.names:
        return [{} for _ in range(batch.num_rows)]
    cells: list[dict[str, Any]] = batch.column(name).to_pylist()
    return [_nan_free(cell) for cell in cells]


def _nan_free(cell: dict[str, Any]) -> dict[str, Any]:
    """NaN read back as None (segment_table stores null; a NaN in a segment written elsewhere is the line's null)."""
    out = {}
    for key, value in cell.items():
        if isinstance(value, dict):
            value = _nan_free(value)
        elif isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out
