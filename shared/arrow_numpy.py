"""numpy <-> Arrow for the scoring path, through the arrays' buffers and never through pandas.

pyarrow's own conversions (pa.array, Array.to_numpy) import pandas the first time they run (its pandas
shim, and the C++ converter's static data): ~220 ms and tens of MB on a scoring instance's first CSV or
Arrow request, where the scoring path promises onnxruntime, numpy and pyarrow only
(tests/unit/test_arrow_numpy.py checks pandas stays unloaded). Flat primitive and string arrays are
plain buffers, so these helpers read and build them directly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def valid_mask(array: pa.Array) -> np.ndarray | None:
    """True where the array holds a value; None when it has no nulls."""
    if not array.null_count:
        return None
    bitmap = array.buffers()[0]
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[array.offset: array.offset + len(array)].astype(bool)


def float_values(array: pa.Array) -> np.ndarray:
    """An integer or floating array as float64, nulls as NaN (a view when it is float64 without nulls)."""
    if array.type != pa.float64():
        array = array.cast(pa.float64(), safe=False)
    values = np.frombuffer(array.buffers()[1], dtype=np.float64, count=len(array), offset=array.offset * 8)
    valid = valid_mask(array)
    if valid is None:
        return values
    values = values.copy()
    values[~valid] = np.nan
    return values


def int64_values(array: pa.Array) -> np.ndarray:
    """An integer array without nulls as int64. Raises pa.ArrowInvalid for a value beyond int64."""
    if array.type != pa.int64():
        array = array.cast(pa.int64())
    return np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array), offset=array.offset * 8)


def string_values(array: pa.Array, missing: str) -> np.ndarray:
    """A string array as an object array of str, nulls as `missing`."""
    return np.array([missing if v is None else v for v in array.to_pylist()], dtype=object)


def float_array(values: np.ndarray) -> pa.Array:
    """A float64 Arrow array of values (widened from float32), NaN as null."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    nan = np.isnan(values)
    if not nan.any():
        return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])
    bitmap = np.packbits(~nan, bitorder="little")
    return pa.Array.from_buffers(pa.float64(), len(values), [pa.py_buffer(bitmap), pa.py_buffer(values)],
                                 null_count=int(nan.sum()))


def int64_array(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def string_array(values: Sequence[str]) -> pa.Array:
    """A string Arrow array of Python strings (a classifier's labels); ASCII text in one join, no per-row
    encode."""
    count = len(values)
    joined = "".join(values)
    if joined.isascii():
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)
        data = joined.encode("ascii")
    else:
        encoded = [v.encode("utf-8") for v in values]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=count)
        data = b"".join(encoded)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))
