"""Arrow-backed request bodies and responses for batch callers: big CSV bodies, Arrow IPC streams, Parquet.

Imported only when such a body (or an Accept asking for CSV or Arrow) arrives, so pyarrow stays off the
cold-start path of scoring (tests/integration/test_app_index.py checks function_app loads no pyarrow).
Values follow shared.scoring's rules whatever the format: a number must be finite and fit the input's
dtype, a null (an empty CSV cell) is NaN for a number and the signature's marker for a category, and
column checks (missing, unknown, repeated) give the same messages as JSON bodies.

- CSV (read_csv_body): pyarrow's reader for bodies the stdlib reader would read the same way; it answers
  None (and the stdlib reader decides, with its messages) for anything it cannot vouch for: a header that
  is not exactly the features, quotes, a cell it cannot convert, NaN or infinity, a line over the stdlib's
  128 KiB field limit.
- Arrow IPC stream / Parquet (read_table_body): typed columns; a float input takes any integer or float
  column, an integer input integer columns (whole floats through the JSON rule), a categorical input
  string columns (numbers become their text, as in JSON); dictionary-encoded columns are decoded first.
- Responses (encode_results): the MLflow-shaped JSON answer as a table, one row per scored row:
  prediction_id, prediction, probability_<class> (classifiers) and model_version.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from shared.errors import BadRequest
from shared.id_text import default_id_text
from shared.prediction_log import DefaultIds
from shared.scoring import Feature, ScoringRequest, Signature, _clip, _json_column, _not_finite, _select

CSV_FIELD_LIMIT = 131_072  # csv.field_size_limit(): the stdlib reader refuses longer fields
_BOM = b"\xef\xbb\xbf"
CSV_BLOCK_MIN = 256 * 1024
_CONVERT = {"f": pa.float64(), "i": pa.int64()}
FORMAT_LABELS = {"arrow": "Arrow IPC stream", "parquet": "Parquet", "csv": "CSV"}


# ---------------------------------------------------------------------------------------------
# Request bodies


def read_csv_body(body: bytes, signature: Signature) -> ScoringRequest | None:
    """A CSV body as session feeds, or None when the stdlib reader must decide (it gives the messages)."""
    text = body[len(_BOM):] if body.startswith(_BOM) else body
    names = _csv_header(text, signature)
    if names is None or (len(text) > CSV_FIELD_LIMIT and _longest_line(text) > CSV_FIELD_LIMIT):
        return None
    types = {f.name: _CONVERT.get(f.dtype.kind, pa.string()) for f in signature.features}
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(text),
            read_options=pa_csv.ReadOptions(use_threads=True, block_size=_block_size(len(text))),
            parse_options=pa_csv.ParseOptions(quote_char=False, double_quote=False, escape_char=False),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError):  # a ragged row, a cell that is no number, bytes that are not UTF-8
        return None
    if table.num_rows == 0:
        return None
    inputs = {}
    for feature in signature.features:
        values = _csv_column(table.column(feature.name).combine_chunks(), feature, signature.categorical_missing)
        if values is None:
            return None
        inputs[feature.name] = values
    return ScoringRequest(inputs, table.num_rows)


def _block_size(size: int) -> int:
    # pyarrow parses and converts blocks in parallel: a few blocks per body keep both cores busy (a 2 MB
    # body reads in 4.0 ms as 4 blocks, 7.2 ms as one); below 256 KiB a block's set-up costs more than it saves.
    return max(CSV_BLOCK_MIN, size // 4 + 1)


def _csv_header(text: bytes, signature: Signature) -> list[str] | None:
    end = text.find(b"\n")
    try:
        names = text[: end if end >= 0 else len(text)].decode("utf-8").split(",")
    except UnicodeDecodeError:
        return None
    if len(set(names)) != len(names) or set(names) != set(signature.feature_names):
        return None  # blanks around names, absent optional, unknown or repeated columns: the stdlib path
    return names


def _longest_line(text: bytes) -> int:
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    bounds = np.concatenate(([-1], ends, [len(text)]))
    return int(np.diff(bounds).max())


def _csv_column(col: pa.Array, feature: Feature, missing: str) -> np.ndarray | None:
    if feature.dtype == object:
        values = col.to_numpy(zero_copy_only=False).reshape(-1, 1)
        values[values == ""] = missing  # an empty cell is a missing category
        return values
    if col.null_count and feature.dtype.kind == "i":
        return None  # an empty cell where an integer is needed: the stdlib path says which
    values = col.to_numpy(zero_copy_only=False)  # nulls (empty cells) are NaN
    with np.errstate(over="ignore"):
        cast = values.astype(feature.dtype, copy=False)
    if feature.dtype.kind == "f" and not _finite_or_null(cast, col):
        return None  # nan, inf or a number beyond the dtype: the stdlib path names column and row
    return cast.reshape(-1, 1)


def _finite_or_null(values: np.ndarray, col: pa.Array) -> bool:
    bad = ~np.isfinite(values)
    if col.null_count:
        bad &= ~col.is_null().to_numpy(zero_copy_only=False)
    return not bad.any()


def read_table_body(body: bytes, kind: str, signature: Signature) -> ScoringRequest:
    """An Arrow IPC stream or Parquet body as session feeds. Raises BadRequest naming what is wrong."""
    label = FORMAT_LABELS[kind]
    try:
        table = pa_ipc.open_stream(body).read_all() if kind == "arrow" else pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise BadRequest(f"request body is not a valid {label}: {_clip(str(exc), 200)}") from None
    return table_request(table, signature)


def table_request(table: pa.Table | pa.RecordBatch, signature: Signature) -> ScoringRequest:
    """Session feeds from typed columns, checked as JSON columns are. Raises BadRequest."""
    names = list(table.column_names)
    columns: list[Any] = [table.column(i) for i in range(table.num_columns)]
    ordered = _select(names, columns, signature, None)  # missing, unknown, repeated: the JSON messages
    missing = signature.categorical_missing
    inputs = {f.name: column_values(col, f, missing) for f, col in zip(signature.features, ordered, strict=True)}
    return ScoringRequest(inputs, table.num_rows)


def column_values(col: Any, feature: Feature, missing: str) -> np.ndarray:
    """One typed column as a session feed [N, 1]; a list (an absent optional column of nulls) as JSON cells."""
    if isinstance(col, list):
        return _json_column(col, feature, missing)
    array = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if feature.dtype.kind == "f":
        return _float_values(array, feature)
    if feature.dtype.kind == "i" and pa.types.is_integer(array.type) and not array.null_count:
        return _int_values(array, feature)
    if feature.dtype == object and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        values = array.to_numpy(zero_copy_only=False).reshape(-1, 1)
        if array.null_count:
            values[array.is_null().to_numpy(zero_copy_only=False)] = missing
        return values
    return _json_column(array.to_pylist(), feature, missing)  # the JSON rules and messages, cell by cell


def _float_values(array: pa.Array, feature: Feature) -> np.ndarray:
    if pa.types.is_null(array.type):
        return np.full((len(array), 1), np.nan, dtype=feature.dtype)
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise BadRequest(f"column {feature.name!r}: expected numbers, got a column of Arrow type {array.type}")
    if array.type != pa.float64():
        array = array.cast(pa.float64(), safe=False)
    values = array.to_numpy(zero_copy_only=False)  # nulls are NaN; no copy for a float64 column without nulls
    with np.errstate(over="ignore"):
        cast = values.astype(feature.dtype, copy=False)
    if np.isfinite(cast).all():  # the common case, in one pass
        return cast.reshape(-1, 1)
    bad = ~np.isfinite(cast)
    if array.null_count:
        bad &= ~array.is_null().to_numpy(zero_copy_only=False)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _not_finite(feature, i, float(values[i]))
    return cast.reshape(-1, 1)


def _int_values(array: pa.Array, feature: Feature) -> np.ndarray:
    try:
        return array.cast(pa.int64()).to_numpy(zero_copy_only=False).reshape(-1, 1)
    except pa.ArrowInvalid:
        raise BadRequest(f"column {feature.name!r}: a value does not fit in int64") from None


# ---------------------------------------------------------------------------------------------
# Results


def results_table(
    predictions: np.ndarray, probabilities: np.ndarray | None, class_keys: Sequence[str], ids: Sequence[str],
    version: int,
) -> pa.Table:
    """One row per scored row: prediction_id, prediction, probability_<class> per class, model_version."""
    labels = predictions.reshape(-1)
    if labels.dtype.kind == "f":
        labels = labels.astype(np.float64)  # the JSON answer's numbers (float32 outputs widened, NaN as null)
    columns: dict[str, Any] = {"prediction_id": id_column(ids), "prediction": _label_column(labels)}
    if probabilities is not None:
        wide = probabilities.astype(np.float64, copy=False)
        for k, key in enumerate(class_keys):
            columns[f"probability_{key}"] = pa.array(wide[:, k])
    columns["model_version"] = pa.array(np.full(len(labels), version, dtype=np.int64))
    return pa.table(columns)


def _label_column(labels: np.ndarray) -> pa.Array:
    if labels.dtype == object:  # a classifier's string labels: typed, Arrow skips inferring (3x faster)
        try:
            return pa.array(labels, type=pa.string())
        except (pa.ArrowException, TypeError):
            pass
    return pa.array(labels, from_pandas=labels.dtype.kind == "f")


def id_column(ids: Sequence[str]) -> pa.Array:
    """Prediction ids as an Arrow string column; DefaultIds joined in Arrow, never made as Python strings."""
    if isinstance(ids, DefaultIds):
        offsets, data = default_id_text(ids.request_id, ids.start, ids.rows)
        return pa.StringArray.from_buffers(ids.rows, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))
    return pa.array(ids, type=pa.string())


def encode_table(table: pa.Table, kind: str) -> bytes:
    """A results table as CSV (header row) or an Arrow IPC stream."""
    sink = io.BytesIO()
    if kind == "csv":
        pa_csv.write_csv(table, sink)
    else:
        with pa_ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()
