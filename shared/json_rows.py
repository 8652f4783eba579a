"""Big numeric dataframe_split (or input_data) JSON bodies straight into float feeds.

orjson builds a Python float per cell (12-20 ms for 300,000 cells) before numpy copies them again. Here the
rows array goes to the native reader (shared.native_numbers), which checks the rows' shape and writes the
column-major matrix directly (~2.5 ms for 2 MB on two threads); when it is not built, or for a number it
leaves to others (an integer of 19 digits or more), simdjson (pysimdjson) validates the array as strict
JSON and copies its numbers into one float64 buffer without a Python object per cell (~4 ms for 2 MB), and
a few whole-array byte comparisons then prove the buffer is a rectangle of rows. Rows holding nulls go to
pyarrow's CSV reader instead (shared.arrow_bodies.read_split_rows), which reads a null as NaN.

Only a body the general path would read the same way takes these paths; anything else (strings, booleans,
NaN, a ragged or nested row, a number beyond float64 or the input's float32, keys the general path would
treat differently) answers None and the general path decides, with its messages
(tests/unit/test_scoring_json_rows.py checks both, on random bodies).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
import simdjson

from shared import native_numbers
from shared.scoring import INPUT_KEYS, ScoringRequest, Signature, _column_order, matrix_request

_DATA_KEY = b'"data"'
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_INPUT_KEYS = frozenset(INPUT_KEYS)
_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")
# A parser keeps buffers sized for the biggest document it read (~4.5x its bytes: 9 MB after a 2 MB body), so
# a parser that read more than this is dropped rather than pooled, and the pool keeps about one parser per
# core of a Functions instance (at most ~75 MB for two); more big bodies at once make a parser each, which
# costs ~5 ms per MB in page faults.
_POOLED_MAX_BYTES = 8 * 1024 * 1024
_POOL_SIZE = 2
# Rows with nulls this big go through pyarrow's CSV reader; below it orjson and numpy read them faster than
# pyarrow's reader starts.
ARROW_ROWS_MIN_BYTES = 64 * 1024


class SplitRows(NamedTuple):
    """A split body's column names (exactly the features, any order), each feature's position among them,
    its rows array's bytes and params.ids."""

    names: list[str]
    order: Sequence[int]
    rows: bytes
    ids: Any


def read_split(body: bytes, signature: Signature, *, arrow_min_bytes: int = ARROW_ROWS_MIN_BYTES,
               ) -> ScoringRequest | None:
    """A big dataframe_split (or input_data) body of numbers (and nulls, when its rows take arrow_min_bytes
    or more) as session feeds, or None."""
    parts = split_rows(body, signature)
    if parts is None:
        return None
    request = _numbers(parts, signature)
    if request is None and len(parts.rows) >= arrow_min_bytes and b"null" in parts.rows:
        from shared import arrow_bodies  # pyarrow loads only for such bodies

        return arrow_bodies.read_split_rows(parts, signature)
    return request


def split_rows(body: bytes, signature: Signature) -> SplitRows | None:
    """The parts of a body whose rows array is the value of its only "data" key; None when unsure."""
    located = _rows_span(body)
    if located is None:
        return None
    start, end = located
    try:
        doc = orjson.loads(body[:start] + b"[]" + body[end:])  # everything but the rows, rows left empty
    except orjson.JSONDecodeError:
        return None
    names = _split_columns(doc, signature)
    order = None if names is None else _column_order(names, signature)
    if names is None or order is None:
        return None
    params = doc.get("params")
    return SplitRows(names, order, body[start:end], params.get("ids") if isinstance(params, dict) else None)


def _rows_span(body: bytes) -> tuple[int, int] | None:
    """Where the only "data" key's value, an array of arrays, starts and ends; None when unsure.

    The rest of the body, parsed with the rows left empty (split_rows), proves the span is that value."""
    key = body.find(_DATA_KEY)
    if key < 0:
        return None
    colon = key + len(_DATA_KEY)
    while colon < len(body) and body[colon] in b" \t\r\n":
        colon += 1
    start = colon + 1
    while start < len(body) and body[start] in b" \t\r\n":
        start += 1
    end = body.rfind(b"]]") + 2  # the rows usually end the body; split_rows' parse refuses any other "]]"
    if body[colon: colon + 1] != b":" or body[start: start + 2] != b"[[" or end <= start:
        return None
    if body.find(_DATA_KEY, end) >= 0:
        return None  # a second "data" key (a "data" inside a string is escaped: \"data\")
    return start, end


def _split_columns(doc: Any, signature: Signature) -> list[Any] | None:
    """The body's column names (a list) when the rows left empty sit at doc[dataframe_split]["data"]; None
    otherwise."""
    if not isinstance(doc, dict):
        return None
    found = doc.keys() & _INPUT_KEYS
    if len(found) != 1:
        return None
    (key,) = found
    split = doc[key]
    if key not in ("dataframe_split", "input_data") or not isinstance(split, dict) or split.get("data") != []:
        return None
    if not set(split) <= _SPLIT_KEYS:
        return None
    names = split.get("columns", signature.feature_list)
    return names if isinstance(names, list) else None


# ---------------------------------------------------------------------------------------------
# Rows of numbers: the native reader, else simdjson


def _numbers(parts: SplitRows, signature: Signature) -> ScoringRequest | None:
    """Feeds of rows holding only numbers, or None (a null, a string, a boolean, invalid JSON, a bad shape)."""
    width = len(parts.names)
    # column-major, as the general path's rows matrix: each feature's values are one contiguous feed
    # an "n" is a null's (no number holds one): simdjson refuses it fast, the native reader only at the cell
    values = None if b"n" in parts.rows else native_numbers.json_rows_matrix(parts.rows, width)
    if values is None:
        values = _simdjson_matrix(parts.rows, width)
    if values is None:
        return None
    return matrix_request(values, parts.order, signature, True, parts.ids)


def _simdjson_matrix(rows: bytes, width: int) -> np.ndarray | None:
    """The rows as a Fortran-ordered float64 [N, width] matrix, or None (not numbers, not a rectangle)."""
    parser = _take_parser()
    try:
        flat, count = _flat_numbers(parser, rows)
    finally:
        _give_back(parser, len(rows))
    if flat is None or flat.size != count * width or not _rectangular(rows, count, width):
        return None
    return np.asfortranarray(flat.reshape(count, width))


def _flat_numbers(parser: simdjson.Parser, rows: bytes) -> tuple[np.ndarray | None, int]:
    """(every number of the JSON array `rows`, flattened, and its element count), or (None, 0).

    The document's proxies live only in this frame: a parser may be reused once none refers to it."""
    try:
        doc = parser.parse(rows)
        if not isinstance(doc, simdjson.Array) or not len(doc):
            return None, 0
        return np.frombuffer(doc.as_buffer(of_type="d"), dtype=np.float64), len(doc)
    except (ValueError, TypeError, RuntimeError):  # invalid JSON, a number beyond float64 (ValueError) or
        return None, 0  # 64 bits (RuntimeError), a cell that is not a number (TypeError)


def _rectangular(rows: bytes, count: int, width: int) -> bool:
    """The valid JSON array `rows`, whose every leaf is a number, holds `count` arrays of `width` numbers.

    Cut at every "[": the outer one, then one per row when each of the `count` elements is an array and none
    nests another. Then each piece holds one "]" (its row's; the last piece also the outer one), so every
    row is flat, and `width` commas (its row's width - 1 and the one after it; the last piece width - 1).
    ~1 ms for 2 MB, in whole-array numpy operations."""
    codes = np.frombuffer(rows, dtype=np.uint8)
    opens = np.flatnonzero(codes == _OPEN)
    if len(opens) != count + 1:
        return False
    # Sums in the narrowest type that holds width run 3-5x faster (uint8 over the comparison's own bytes: no
    # cast). A piece whose count wraps around to the expected one is too long, and as all pieces add up to
    # the document's totals (count + 1 "]", count * width numbers), another piece is then too short, and
    # that one cannot wrap.
    small = np.uint8 if width < 255 else np.uint16 if width < 65_535 else np.intp
    closes = np.add.reduceat((codes == _CLOSE).view(np.uint8), opens, dtype=small)
    commas = np.add.reduceat((codes == _COMMA).view(np.uint8), opens, dtype=small)
    return bool(closes[0] == 0 and commas[0] == 0 and closes[-1] == 2 and commas[-1] == width - 1
                and (closes[1:-1] == 1).all() and (commas[1:-1] == width).all())


_pool: list[simdjson.Parser] = []
_pool_lock = threading.Lock()


def _take_parser() -> simdjson.Parser:
    # A simdjson.Parser is not thread-safe, and a new one per request costs ~5 ms per MB (its buffers'
    # page faults): the host's threads share a few.
    with _pool_lock:
        if _pool:
            return _pool.pop()
    return simdjson.Parser()


def _give_back(parser: simdjson.Parser, size: int) -> None:
    if size > _POOLED_MAX_BYTES:
        return
    with _pool_lock:
        if len(_pool) < _POOL_SIZE:
            _pool.append(parser)
