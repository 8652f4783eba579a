"""shared.arrow_numpy reads and builds Arrow arrays through their buffers: the same values pyarrow's own
(pandas-loading) conversions give, slices and nulls included."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import arrow_numpy

maybe_floats = st.lists(st.one_of(st.none(), st.floats(allow_nan=False, width=64)), max_size=70)


@given(values=maybe_floats, start=st.integers(0, 10), types=st.sampled_from([pa.float64(), pa.float32()]))
def test_float_values_are_pyarrows_with_nulls_as_nan_even_for_a_slice(values: list[float | None], start: int,
                                                                       types: pa.DataType) -> None:
    array = pa.array(values, type=pa.float64()).cast(types).slice(start)
    got = arrow_numpy.float_values(array)
    want = [math.nan if v is None else float(np.float64(v)) for v in array.to_pylist()]
    assert got.dtype == np.float64 and np.array_equal(got, np.array(want, dtype=np.float64), equal_nan=True)
    valid = arrow_numpy.valid_mask(array)
    assert (valid is None) == (array.null_count == 0)
    if valid is not None:
        assert valid.tolist() == [v is not None for v in array.to_pylist()]


@given(values=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), start=st.integers(0, 5))
def test_int64_values_read_a_slice(values: list[int], start: int) -> None:
    array = pa.array(values, type=pa.int64()).slice(start)
    assert arrow_numpy.int64_values(array).tolist() == values[start:]


def test_int64_values_refuse_what_does_not_fit() -> None:
    with pytest.raises(pa.ArrowInvalid):
        arrow_numpy.int64_values(pa.array([2**64 - 1], type=pa.uint64()))


@given(values=st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=60))
def test_float_array_is_pyarrows_with_nan_as_null(values: list[float | None]) -> None:
    raw = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    built = arrow_numpy.float_array(raw)
    built.validate(full=True)
    assert built.equals(pa.array(raw, from_pandas=True))


@given(values=st.lists(st.text(max_size=8), max_size=60))
def test_string_array_is_pyarrows_for_any_text(values: list[str]) -> None:
    built = arrow_numpy.string_array(values)
    built.validate(full=True)
    assert built.to_pylist() == values
    assert arrow_numpy.string_values(built, "missing").tolist() == values


def test_string_values_fill_nulls_with_the_marker() -> None:
    assert arrow_numpy.string_values(pa.array(["a", None, "b"]), "?").tolist() == ["a", "?", "b"]
