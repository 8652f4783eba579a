"""shared.id_text builds default prediction ids with numpy: the same text as Python's f-strings, for any range."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shared.id_text import default_id_text

REQUEST_IDS = st.text(alphabet="abcdef0123456789-._:", min_size=1, max_size=40)


def _split(offsets: np.ndarray, data: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


@given(rid=REQUEST_IDS, start=st.integers(0, 10**12), rows=st.integers(0, 300))
def test_ids_are_the_f_strings(rid: str, start: int, rows: int) -> None:
    offsets, data = default_id_text(rid, start, rows)
    assert offsets[0] == 0 and len(offsets) == rows + 1 and offsets[-1] == len(data)
    assert _split(offsets, data) == [f"{rid}-{row}".encode() for row in range(start, start + rows)]


@given(start=st.sampled_from([0, 7, 95, 999, 9_990, 2**32 - 5, 10**15 - 3]), rows=st.integers(1, 40))
def test_runs_across_digit_counts_and_uint32_stay_in_order(start: int, rows: int) -> None:
    offsets, data = default_id_text("r", start, rows, before=b'"', after=b'",')
    assert data.tobytes() == b"".join(b'"r-%d",' % row for row in range(start, start + rows))
    assert np.all(np.diff(offsets) > 0)
