"""Arrow-backed request bodies and responses for batch callers: big CSV bodies, Arrow IPC streams, Parquet.

Imported only when such a body (or an Accept asking for CSV or Arrow) arrives, so pyarrow stays off the
cold-start path of scoring (tests/integration/test_app_index.py checks function_app loads no pyarrow).
Values follow shared.scoring's rules whatever the format: a number must be finite and fit the input's
dtype, a null (an empty CSV cell) is NaN for a number and the signature's marker for a category, and
column checks (missing, unknown, repeated) give the same messages as JSON bodies.

- CSV (read_csv_body): for bodies the stdlib reader would read the same way, the native reader
  (shared.native_numbers) when every input is a float and every cell a plain number or empty, else
  pyarrow's reader; both answer None (and the stdlib reader decides, with its messages) for anything they
  cannot vouch for: a header that is not exactly the features, quotes, a cell they cannot convert, NaN or
  infinity, a line over the stdlib's 128 KiB field limit.
- Arrow IPC stream / Parquet (read_table_body): typed columns; a float input takes any integer or float
  column, an integer input integer columns (whole floats through the JSON rule), a categorical input
  string columns (numbers become their text, as in JSON); dictionary-encoded columns are decoded first.
- Big numeric JSON rows holding nulls (read_split_rows, from shared.json_rows): pyarrow's CSV reader.
- Responses: the MLflow-shaped JSON answer as a table (results_table), one row per scored row: prediction_id,
  prediction, probability_<class> (classifiers) and model_version; as an Arrow IPC stream (arrow_stream) or CSV
  (results_csv: laid out natively, byte for byte as pyarrow's writer would write the table).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from shared import arrow_numpy, native_numbers
from shared.errors import BadRequest
from shared.id_text import default_id_text
from shared.prediction_log import DefaultIds
from shared.scoring import (
    Feature,
    ScoringRequest,
    Signature,
    _clip,
    _column_order,
    _json_column,
    _not_finite,
    _select,
    column_json,
    ids_json,
    matrix_request,
)

if TYPE_CHECKING:
    from shared.json_rows import SplitRows  # json_rows imports this module only when it needs it

CSV_FIELD_LIMIT = 131_072  # csv.field_size_limit(): the stdlib reader refuses longer fields
_BOM = b"\xef\xbb\xbf"
CSV_BLOCK_MIN = 256 * 1024
_CONVERT = {"f": pa.float64(), "i": pa.int64()}
FORMAT_LABELS = {"arrow": "Arrow IPC stream", "parquet": "Parquet", "csv": "CSV"}
# Bodies with a quote go to the stdlib reader (scoring._arrow_csv), so pyarrow reads every other one unquoted.
UNQUOTED_CSV = pa_csv.ParseOptions(quote_char=False, double_quote=False, escape_char=False)


# ---------------------------------------------------------------------------------------------
# Request bodies


def read_csv_body(body: bytes, signature: Signature) -> ScoringRequest | None:
    """A CSV body as session feeds, or None when the stdlib reader must decide (it gives the messages)."""
    text = body[len(_BOM):] if body.startswith(_BOM) else body
    names = _csv_header(text, signature)
    if names is None:
        return None
    if signature.all_float:  # the native reader refuses a quote or a carriage return itself: no scan for them first
        fast = _native_csv(text, names, signature)
        if fast is not None:
            return fast
    # Quotes and line ends with a carriage return are left to the stdlib reader, whose rules (and messages) are the
    # contract (the header has neither: its names are the features')
    if b'"' in text or b"\r" in text or (len(text) > CSV_FIELD_LIMIT and _may_hold_a_long_line(text)):
        return None
    types = {f.name: _CONVERT.get(f.dtype.kind, pa.string()) for f in signature.features}
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(text),
            read_options=pa_csv.ReadOptions(use_threads=True, block_size=csv_block_size(len(text))),
            parse_options=UNQUOTED_CSV,
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError):  # a ragged row, a cell that is no number, bytes that are not UTF-8
        return None
    if table.num_rows == 0:
        return None
    inputs = _csv_feeds(table, signature)
    return None if inputs is None else ScoringRequest(inputs, table.num_rows)


def _native_csv(text: bytes, names: list[str], signature: Signature) -> ScoringRequest | None:
    """Lines of numbers and empty cells through the native reader (its cells are at most 100 bytes, far
    below the stdlib reader's field limit), or None."""
    order = _column_order(names, signature)
    header_end = text.find(b"\n")
    matrix = None if order is None or header_end < 0 else native_numbers.csv_matrix(text, header_end + 1, len(names))
    if order is None or matrix is None:
        return None
    return matrix_request(matrix.values, order, signature, matrix.complete, None)


def _csv_feeds(table: pa.Table, signature: Signature) -> dict[str, np.ndarray] | None:
    inputs = {}
    for feature in signature.features:
        values = _csv_column(table.column(feature.name).combine_chunks(), feature, signature.categorical_missing)
        if values is None:
            return None
        inputs[feature.name] = values
    return inputs


# ---------------------------------------------------------------------------------------------
# Big numeric JSON bodies with nulls: the rows of a dataframe_split body through pyarrow's CSV reader
#
# shared.json_rows reads rows of numbers with simdjson; rows with nulls come here. The rows array of a
# compact body, [[1.5,2],[3,null]], is one translate away from CSV lines ('[' -> newline, ']' -> comma:
# "\n\n1.5,2,,\n3,null,,"), which pyarrow parses on both cores. Only rows the general path would read the
# same way are taken; for anything else (pretty-printed rows, strings, booleans, NaN, a ragged row, a
# number strict JSON refuses but a CSV reader takes, such as .5, 5., +5 or 05) it answers None and the
# general path decides, with its messages.

_TO_CSV = bytes.maketrans(b"[]", b"\n,")
_PAD_COLUMNS = ("\x00end-of-row", "\x00after-row")  # the two empty cells each row ends with
_BYTE = {char: ord(char) for char in "[],.+-0eE "}


def read_split_rows(parts: SplitRows, signature: Signature) -> ScoringRequest | None:
    """The rows of a big dataframe_split body (numbers and nulls) as session feeds, or None."""
    if b'"' in parts.rows or b"\n" in parts.rows or b"\t" in parts.rows or b"\r" in parts.rows:
        return None
    rows = _without_blanks_after_commas(parts.rows) if b" " in parts.rows else parts.rows
    if rows is None or not _strict_rows(rows):
        return None
    text = rows.translate(_TO_CSV)
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(text),
            read_options=pa_csv.ReadOptions(column_names=[*parts.names, *_PAD_COLUMNS], use_threads=True,
                                            block_size=csv_block_size(len(text))),
            parse_options=UNQUOTED_CSV,
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(parts.names, pa.float64()),
                                                  include_columns=parts.names, null_values=["null"],
                                                  strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError):  # a ragged row, an empty cell, a cell that is no number
        return None
    inputs = _csv_feeds(table, signature)
    return None if inputs is None else ScoringRequest(inputs, table.num_rows, parts.ids)


def _without_blanks_after_commas(rows: bytes) -> bytes | None:
    """Rows as Python's json.dumps writes them ("[[1.5, 2], [3, 4]]") without those blanks; None for
    blanks anywhere else (between the digits of one number, they would join two numbers into one)."""
    codes = np.frombuffer(rows, dtype=np.uint8)
    blanks = np.flatnonzero(codes == _BYTE[" "])
    if codes[blanks - 1].min() != _BYTE[","] or codes[blanks - 1].max() != _BYTE[","]:
        return None
    return rows.translate(None, b" ")  # a one-byte table: ~3x faster than replace(b", ", b",")


def _strict_rows(rows: bytes) -> bool:
    """The bytes are '[[' row '],[' row ... ']]' (no nesting; pyarrow counts each row's cells) and no
    number has a form strict JSON refuses and pyarrow would take.

    Whole-array comparisons of neighbouring bytes, ~0.1 ms each for 2 MB (index arrays of the 300,000
    commas or dots would cost ten times that)."""
    codes = np.frombuffer(rows, dtype=np.uint8)
    if len(codes) < 4 or rows[:2] != b"[[" or rows[-2:] != b"]]":
        return False
    opens, closes, commas = codes == _BYTE["["], codes == _BYTE["]"], codes == _BYTE[","]
    joints = commas[1:-1]  # "],[" between rows: every other bracket is one of the two pairs at the ends
    if np.any(opens[2:] & ~(joints & closes[:-2])) or np.any(closes[:-2] & ~(joints & opens[2:])):
        return False
    digits = codes - _BYTE["0"] <= 9  # uint8 arithmetic: bytes below '0' wrap around to large values
    if np.any((codes[1:-1] == _BYTE["."]) & ~(digits[:-2] & digits[2:])):
        return False  # .5, 5. and 5.e3: a digit must be on each side of the point
    if b"+" in rows:
        exponent = (codes[:-1] == _BYTE["e"]) | (codes[:-1] == _BYTE["E"])
        if np.any((codes[1:] == _BYTE["+"]) & ~exponent):
            return False
    # 05 and -05 (an exponent's 1e05 is fine): a cell that starts with 0, or with -0, and goes on with a digit
    starts = commas[:-3] | opens[:-3]
    zero_then_digit = (codes[1:-2] == _BYTE["0"]) & digits[2:-1]
    if np.any(starts & zero_then_digit):
        return False
    return not np.any(starts[:-1] & (codes[1:-3] == _BYTE["-"]) & zero_then_digit[1:])


def csv_block_size(size: int) -> int:
    # pyarrow parses and converts blocks in parallel: a few blocks per body keep both cores busy (a 2 MB
    # body, interleaved runs: 4.6-4.9 ms in blocks of 192 KiB to 1 MiB, 5.8-5.9 ms in one); below 256 KiB a
    # block's set-up costs more than it saves (5.4-5.7 ms in blocks of 64-128 KiB).
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


def _may_hold_a_long_line(text: bytes) -> bool:
    """False when no line is longer than CSV_FIELD_LIMIT. A newline in every half-limit stretch (a few
    finds that stop at the first newline, ~10 µs for 2 MB) bounds each line by the limit; only a body
    where that fails has its lines measured (~0.5 ms)."""
    half = CSV_FIELD_LIMIT // 2
    if all(text.find(b"\n", start, start + half) >= 0 for start in range(0, len(text) - half, half)):
        return False
    return _longest_line(text) > CSV_FIELD_LIMIT


def _longest_line(text: bytes) -> int:
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    bounds = np.concatenate(([-1], ends, [len(text)]))
    return int(np.diff(bounds).max())


def _csv_column(col: pa.Array, feature: Feature, missing: str) -> np.ndarray | None:
    if feature.dtype == object:
        values = arrow_numpy.string_values(col, missing).reshape(-1, 1)
        values[values == ""] = missing  # an empty cell is a missing category
        return values
    if col.null_count and feature.dtype.kind == "i":
        return None  # an empty cell where an integer is needed: the stdlib path says which
    if feature.dtype.kind == "i":
        return arrow_numpy.int64_values(col).reshape(-1, 1)
    values = arrow_numpy.float_values(col)  # nulls (empty cells) are NaN
    with np.errstate(over="ignore"):
        cast = values.astype(feature.dtype, copy=False)
    if _not_finite_at(cast, col) is not None:
        return None  # nan, inf or a number beyond the dtype: the stdlib path names column and row
    return cast.reshape(-1, 1)


def _not_finite_at(values: np.ndarray, col: pa.Array) -> int | None:
    """The first row whose value is NaN or infinite without being a null, or None."""
    finite = np.isfinite(values)
    if finite.all():  # the common case, in one pass
        return None
    valid = arrow_numpy.valid_mask(col)
    bad = ~finite if valid is None else ~finite & valid
    return int(np.argmax(bad)) if bad.any() else None


def read_table_body(body: bytes, kind: str, signature: Signature) -> ScoringRequest:
    """An Arrow IPC stream or Parquet body as session feeds. Raises BadRequest naming what is wrong."""
    label = FORMAT_LABELS[kind]
    try:
        # ParquetFile.read, not pq.read_table: the latter loads pandas (for its schema metadata) on first use
        table = pa_ipc.open_stream(body).read_all() if kind == "arrow" else pq.ParquetFile(pa.BufferReader(body)).read()
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
        return arrow_numpy.string_values(array, missing).reshape(-1, 1)
    return _json_column(array.to_pylist(), feature, missing)  # the JSON rules and messages, cell by cell


def _float_values(array: pa.Array, feature: Feature) -> np.ndarray:
    if pa.types.is_null(array.type):
        return np.full((len(array), 1), np.nan, dtype=feature.dtype)
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise BadRequest(f"column {feature.name!r}: expected numbers, got a column of Arrow type {array.type}")
    values = arrow_numpy.float_values(array)  # nulls are NaN; no copy for a float64 column without nulls
    with np.errstate(over="ignore"):
        cast = values.astype(feature.dtype, copy=False)
    bad = _not_finite_at(cast, array)
    if bad is not None:
        raise _not_finite(feature, bad, float(values[bad]))
    return cast.reshape(-1, 1)


def _int_values(array: pa.Array, feature: Feature) -> np.ndarray:
    try:
        return arrow_numpy.int64_values(array).reshape(-1, 1)
    except pa.ArrowInvalid:
        raise BadRequest(f"column {feature.name!r}: a value does not fit in int64") from None


# ---------------------------------------------------------------------------------------------
# Results


def results_table(
    predictions: np.ndarray, probabilities: np.ndarray | None, class_keys: Sequence[str], ids: Sequence[str],
    version: int, label_index: np.ndarray | None = None,
) -> pa.Table:
    """One row per scored row: prediction_id, prediction, probability_<class> per class, model_version.

    label_index (run_model's): string labels as a lookup of class_keys, never as a Python string per row."""
    labels = predictions.reshape(-1)
    if labels.dtype.kind == "f":
        labels = labels.astype(np.float64)  # the JSON answer's numbers (float32 outputs widened, NaN as null)
    if label_index is not None and labels.dtype == object:
        keys = arrow_numpy.string_array(list(class_keys))
        label = pa.DictionaryArray.from_arrays(arrow_numpy.int64_array(label_index), keys).dictionary_decode()
    else:
        label = _label_column(labels)
    columns: dict[str, Any] = {"prediction_id": id_column(ids), "prediction": label}
    if probabilities is not None:
        wide = probabilities.astype(np.float64, copy=False)
        for k, key in enumerate(class_keys):
            columns[f"probability_{key}"] = arrow_numpy.float_array(wide[:, k])
    columns["model_version"] = arrow_numpy.int64_array(np.full(len(labels), version, dtype=np.int64))
    return pa.table(columns)


def results_csv(
    predictions: np.ndarray, probabilities: np.ndarray | None, class_keys: Sequence[str], ids: Sequence[str],
    version: int, label_index: np.ndarray | None = None, *, header: bool = True,
) -> bytes:
    """results_table's rows as CSV, byte for byte as pyarrow's writer writes them (strings quoted, the
    shortest round-trip numbers, a missing value empty; the header row first when header).

    Laid out by the native library from one orjson text per column (~0.9 ms for 10,000 rows of two classes,
    against ~2.1 for pyarrow's table and writer here); pyarrow writes them when the library is not built or a
    column is not one it takes."""
    lines = _native_results_csv(predictions, probabilities, class_keys, ids, version, label_index)
    if lines is None:
        table = results_table(predictions, probabilities, class_keys, ids, version, label_index)
        sink = io.BytesIO()
        pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=header))
        return sink.getvalue()
    return results_csv_header(class_keys, probabilities is not None) + lines if header else lines


def results_csv_header(class_keys: Sequence[str], probabilities: bool) -> bytes:
    """The header line of results_csv, as pyarrow's writer quotes it."""
    names = ["prediction_id", "prediction", *(f"probability_{key}" for key in class_keys if probabilities),
             "model_version"]
    return b",".join(map(_csv_string, names)) + b"\n"


def _csv_string(text: str) -> bytes:
    return b'"' + text.replace('"', '""').encode() + b'"'


def _native_results_csv(
    predictions: np.ndarray, probabilities: np.ndarray | None, class_keys: Sequence[str], ids: Sequence[str],
    version: int, label_index: np.ndarray | None,
) -> bytes | None:
    labels = predictions.reshape(-1)
    if native_numbers.LIBRARY is None or not len(labels):
        return None
    id_column, label_column = _csv_id_column(ids), _csv_label_column(labels, class_keys, label_index)
    if id_column is None or label_column is None:
        return None
    (id_text, pieces, counter), (label_text, lookup) = id_column, label_column
    columns = [id_text, label_text]
    if probabilities is not None:
        if np.isinf(probabilities).any():
            return None  # JSON has no infinity: pyarrow writes it
        columns += [column_json(probabilities[:, k]) for k in range(probabilities.shape[1])]
        pieces += [b","] * probabilities.shape[1]
    pieces.append(b",%d\n" % version)
    return native_numbers.lay_out(columns, pieces, b"", len(labels), lookup=lookup, counter=counter, csv=True)


def _csv_id_column(ids: Sequence[str]) -> tuple[bytes, list[bytes], native_numbers.Counter | None] | None:
    """The ids' column of the layout (text, the pieces before and after it, a counter), or None."""
    if isinstance(ids, DefaultIds):  # '"<request id>-' <row number> '"', the number written by the layout
        return b"", [b'"' + ids.request_id.encode("ascii") + b"-", b'",'], native_numbers.Counter(0, ids.start)
    text = ids_json(ids)
    if b"\\" in text:
        return None  # an escape: JSON's and CSV's spellings differ (checked ids never hold one)
    return text, [b"", b","], None


def _csv_label_column(
    labels: np.ndarray, class_keys: Sequence[str], label_index: np.ndarray | None,
) -> tuple[bytes, native_numbers.Lookup | None] | None:
    """The predictions' column of the layout (text, or the classes looked up), or None."""
    if labels.dtype == object and label_index is not None:
        return b"", native_numbers.Lookup(1, label_index, [_csv_string(key) for key in class_keys])
    if labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and not np.isinf(labels).any()):
        return column_json(labels), None
    return None  # booleans, string labels with no index into the classes, infinity


def _label_column(labels: np.ndarray) -> pa.Array:
    if labels.dtype == object:  # a classifier's labels: onnxruntime's string tensors arrive as str objects
        return arrow_numpy.string_array(labels.tolist())
    if labels.dtype.kind == "f":
        return arrow_numpy.float_array(labels)  # NaN as null, as the JSON answer's null
    return arrow_numpy.int64_array(labels)


def id_column(ids: Sequence[str]) -> pa.Array:
    """Prediction ids as an Arrow string column; DefaultIds joined in Arrow, never made as Python strings."""
    if isinstance(ids, DefaultIds):
        offsets, data = default_id_text(ids.request_id, ids.start, ids.rows)
        return pa.StringArray.from_buffers(ids.rows, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))
    return arrow_numpy.string_array(ids if isinstance(ids, list) else list(ids))


def arrow_stream(table: pa.Table) -> bytes:
    """A results table as an Arrow IPC stream."""
    sink = io.BytesIO()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()
