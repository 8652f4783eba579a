"""The native readers of dense numeric bodies (native/numbers.rs, built by native/build.py), via ctypes.

CSV data lines and the rows array of a JSON dataframe_split body, straight into one Fortran-ordered float64
[N, F] matrix, on two threads for big bodies, with the GIL released (ctypes). 2-3x faster here than
pyarrow's CSV reader or simdjson plus the rectangle check and the reorder they need (bench/README.md).

Each reader takes only bodies every other path reads the same way (see native/numbers.rs) and answers None
for anything else, as it does when the library is not built: the caller's own path then decides, with its
messages. tests/unit/test_native_numbers.py checks both on random bodies.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np  # imported where used, so that native/build.py reads LIBRARY_PATH without numpy

_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
LIBRARY_PATH = Path(__file__).with_name("_native") / f"libmlops_numbers{_SUFFIX}"
# MLOPS_NATIVE_NUMBERS=0 leaves the library unloaded (the benchmark's A/B, or to rule it out).
_ENABLED = os.environ.get("MLOPS_NATIVE_NUMBERS", "1") != "0"
_THREADS = min(2, os.cpu_count() or 1)
# The CSV reader 16 bytes at a time where the CPU can (x86-64 with SSE4.1), else byte by byte: the same answers
# (the tests read every body both ways).
WIDE = True


class Matrix(NamedTuple):
    """Rows as a Fortran-ordered float64 [N, F] matrix (a missing value is NaN) and whether none is missing."""

    values: np.ndarray
    complete: bool


def _load() -> ctypes.CDLL | None:
    if not _ENABLED or not LIBRARY_PATH.exists():
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY_PATH))
    except OSError:  # built for another platform
        return None
    size, pointer = ctypes.c_size_t, ctypes.c_void_p
    lib.mlops_csv_f64.argtypes = [pointer, size, size, size, pointer, ctypes.POINTER(ctypes.c_uint64),
                                  ctypes.c_uint32, ctypes.c_uint32]
    lib.mlops_csv_f64.restype = ctypes.c_int64
    lib.mlops_json_rows_f64.argtypes = [pointer, size, size, size, pointer, ctypes.c_uint32]
    lib.mlops_json_rows_f64.restype = ctypes.c_int64
    lib.mlops_count_byte.argtypes = [pointer, size, ctypes.c_uint8]
    lib.mlops_count_byte.restype = ctypes.c_uint64
    pointers, sizes = ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)
    lib.mlops_lay_out.argtypes = [pointers, sizes, size, pointers, sizes, ctypes.c_char_p, size, size, size,
                                  ctypes.c_uint64, size, pointer, pointers, sizes, size, ctypes.c_uint8, pointer,
                                  size]
    lib.mlops_lay_out.restype = ctypes.c_int64
    return lib


LIBRARY = _load()


def _address(data: bytes | bytearray) -> int:
    """Where data's bytes live (no copy; the caller holds data for the call)."""
    import numpy as np

    return int(np.frombuffer(data, dtype=np.uint8).ctypes.data) if data else 0


def csv_matrix(text: bytes | bytearray, start: int, width: int, end: int | None = None) -> Matrix | None:
    """The CSV lines of text[start:end] (after the header; '\\n' or '\\r\\n' line ends, an empty cell
    missing), or None."""
    import numpy as np

    lib = LIBRARY
    end = len(text) if end is None else end
    if lib is None or width < 1 or not 0 <= start < end <= len(text):
        return None
    at = _address(text) + start
    rows = lib.mlops_count_byte(at, end - start, 10) + (0 if text[end - 1] == 10 else 1)  # 10: "\n"
    out = np.empty((width, rows))  # C-ordered [F, N]: the Fortran [N, F] matrix's memory
    missing = ctypes.c_uint64()
    found = lib.mlops_csv_f64(at, end - start, width, rows, out.ctypes.data, ctypes.byref(missing), _THREADS,
                              int(WIDE))
    return Matrix(out.T, missing.value == 0) if found == rows else None


def json_rows_matrix(rows_json: bytes, width: int) -> np.ndarray | None:
    """The JSON array of arrays of numbers rows_json (no null) as a Fortran-ordered [N, width] matrix, or None."""
    import numpy as np

    lib = LIBRARY
    if lib is None or width < 1 or not rows_json:
        return None
    at = _address(rows_json)
    rows = lib.mlops_count_byte(at, len(rows_json), 91) - 1  # 91: "[", one per row and the outer one
    if rows < 1:
        return None
    out = np.empty((width, rows))
    found = lib.mlops_json_rows_f64(at, len(rows_json), width, rows, out.ctypes.data, _THREADS)
    return out.T if found == rows else None


def per_class_json(columns: list[bytes], keys: list[bytes], rows: int) -> bytes | None:
    """[{"<key 0>":t,...},...] from one JSON array of `rows` numbers per class (orjson's text of a numpy column)
    and the classes' keys as JSON strings; None when a column holds another count, or without the library."""
    if not keys or len(keys) != len(columns):
        return None
    pieces = [b"{" + keys[0] + b":", *(b"," + key + b":" for key in keys[1:]), b"}"]
    return lay_out(columns, pieces, b",", rows, head=b"[", tail=b"]")


_RESPELT = 4  # pyarrow spells a number at most this much longer than orjson ("1e-6" -> "0.000001")


class Lookup(NamedTuple):
    """A column of lay_out written from keys: row r is keys[positions[r]] (positions: int64 [rows])."""

    column: int
    positions: np.ndarray
    keys: list[bytes]


class Counter(NamedTuple):
    """A column of lay_out written as numbers: row r is the decimal number first + r."""

    column: int
    first: int


def lay_out(columns: list[bytes], pieces: list[bytes], between: bytes, rows: int, *, lookup: Lookup | None = None,
            counter: Counter | None = None, csv: bool = False, head: bytes = b"", tail: bytes = b"") -> bytes | None:
    """head, then `rows` rows joined by `between`, then tail; row r is pieces[0] t(0,r) pieces[1] ... pieces[k],
    where t(c,r) is the r-th token of columns[c], a JSON array as orjson writes a numpy column or a list of
    plain strings (tokens without commas), or keys[positions[r]] for the lookup column, or first + r for the
    counter column (their columns entries are unused). csv spells numbers as pyarrow's CSV writer does (null as
    nothing, 1 for orjson's 1.0, 1.5e+10 for its 15000000000.0, 0.0000015 for its 1.5e-6). None when a column
    holds another count of tokens, a position is outside the keys, or without the library."""
    import numpy as np

    lib = LIBRARY
    width = len(columns)
    if lib is None or not width or len(pieces) != width + 1 or rows < 1:
        return None
    keys: list[bytes] = []
    index = None
    if lookup is not None:
        keys = lookup.keys
        index = np.ascontiguousarray(lookup.positions, dtype=np.int64)
        if index.shape != (rows,) or not keys:
            return None
    if counter is not None and not (0 <= counter.column < width and 0 <= counter.first < 2**63 - rows):
        return None
    longest_key = max(map(len, keys), default=0)
    respelt = _RESPELT * width if csv else 0  # what pyarrow's spelling may add to orjson's
    size = (len(head) + len(tail) + sum(map(len, columns))
            + rows * (sum(map(len, pieces)) + len(between) + longest_key + 20 + respelt))
    out = ctypes.create_string_buffer(size)
    ctypes.memmove(out, head, len(head))
    written = lib.mlops_lay_out(
        (ctypes.c_char_p * width)(*columns), (ctypes.c_size_t * width)(*map(len, columns)), width,
        (ctypes.c_char_p * (width + 1))(*pieces), (ctypes.c_size_t * (width + 1))(*map(len, pieces)),
        between, len(between), rows, width if counter is None else counter.column,
        0 if counter is None else counter.first, 0 if lookup is None else lookup.column,
        None if index is None else index.ctypes.data, (ctypes.c_char_p * len(keys))(*keys),
        (ctypes.c_size_t * len(keys))(*map(len, keys)), len(keys), int(csv),
        ctypes.addressof(out) + len(head), size - len(head) - len(tail))
    if written < 0:
        return None
    end = len(head) + written
    ctypes.memmove(ctypes.addressof(out) + end, tail, len(tail))
    return ctypes.string_at(out, end + len(tail))
