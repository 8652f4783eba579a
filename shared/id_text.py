"""The text of default prediction ids ('<request id>-<row>') for many rows at once, built with numpy.

A 10,000-row answer needs 10,000 ids; made as Python strings they cost ~0.1 µs each and Arrow's own
cast-and-join ~0.04 µs. Rows start..start+rows-1 are increasing, so rows with the same number of
digits are one contiguous run: each run is a fixed-width [rows, width] byte matrix, filled by
broadcasting the prefix and one division by ten per digit place, and the runs laid end to end
are the ids in row order (~0.01 µs an id).
"""
from __future__ import annotations

import numpy as np

_ZERO = ord("0")


def default_id_text(request_id: str, start: int, rows: int, *, before: bytes = b"", after: bytes = b"",
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int32 [rows + 1], data uint8) of before + '<request_id>-<row>' + after for each row: the
    buffers of an Arrow string array (before=after=b"" ) or, with before=b'"' and after=b'",', the body
    of a JSON array of strings."""
    prefix = np.frombuffer(before + request_id.encode("ascii") + b"-", dtype=np.uint8)
    suffix = np.frombuffer(after, dtype=np.uint8)
    runs = []  # (first row, end row, digits): rows with the same number of digits
    low, end = start, start + rows
    while low < end:
        digits = len(str(low))
        high = min(end, 10**digits)
        runs.append((low, high, digits))
        low = high
    fixed = len(prefix) + len(suffix)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    lengths = offsets[1:]
    for low, high, digits in runs:
        lengths[low - start: high - start] = fixed + digits
    np.cumsum(lengths, out=lengths)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)  # one buffer, written in place: no copy to join the runs
    for low, high, digits in runs:
        width = fixed + digits
        at = int(offsets[low - start])
        block = data[at: at + (high - low) * width].reshape(high - low, width)
        block[:, : len(prefix)] = prefix
        numbers = np.arange(low, high, dtype=np.uint32 if high <= 2**32 else np.uint64)
        for place in range(len(prefix) + digits - 1, len(prefix) - 1, -1):  # least significant digit first
            quotient = numbers // 10  # by a scalar: numpy divides with SIMD, 10x faster than by an array
            block[:, place] = numbers - quotient * 10 + _ZERO
            numbers = quotient
        if len(suffix):
            block[:, len(prefix) + digits:] = suffix
    return offsets, data
