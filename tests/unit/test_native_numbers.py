"""The native readers (native/numbers.rs through shared.native_numbers) against the readers they stand in for.

Whatever a reader takes must read exactly as Python's float() (correctly rounded, as pyarrow and simdjson
are) reads each cell, and as pyarrow (CSV) or orjson (JSON) read the whole; anything else must answer None,
never a wrong matrix or a crash (a panic aborts this process): random cells in and out of the accepted
grammar, random row shapes, big bodies cut in halves for two threads, random byte mutations.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared import native_numbers

# Cells every reader of the app reads alike: JSON's number grammar, finite, integers up to 18 digits.
plain = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**18) + 1, 10**18 - 1).map(str),
    st.decimals(min_value=-10**6, max_value=10**6, places=6, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d, "f")),
    st.sampled_from(["0", "-0", "0.0", "-0.0", "1e5", "1E+05", "2.5e-3", "5e-324", "1e-400", "1.7976931348623157e308",
                     "9007199254740993", "0.1000000000000000055511151231257827", "123456789012345678",
                     "0." + "0" * 21 + "1", "4.9406564584124654e-324", "2.2250738585072011e-308"]),
)
# Cells some reader takes differently, or not at all: each must send the body back (None). (Blanks around a
# number are JSON's, refused in CSV only.)
REFUSED = [
    ".5", "5.", "+5", "05", "-05", "1e", "1e+", "--1", "-", "1.5.2", "0x10", "1_0", "nan", "NaN", "inf",
    "-Infinity", "1e400", "-1e309", "1234567890123456789", "99999999999999999999", "1" + "0" * 120, "true", "é",
    "1;5", "\"1\"", "1e5e5", "1.e5",
]
refused = st.sampled_from([*REFUSED, " 1", "1 "])


def _reference_csv(lines: Sequence[Sequence[str]]) -> np.ndarray:
    return np.array([[float(c) if c else math.nan for c in line] for line in lines], dtype=np.float64)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    both_nan = np.isnan(got) & np.isnan(want)
    assert (both_nan | (got == want)).all(), (got, want)


def _pyarrow_csv(text: bytes, width: int) -> np.ndarray:
    names = [str(i) for i in range(width)]
    table = pa_csv.read_csv(io.BytesIO(text), read_options=pa_csv.ReadOptions(column_names=names),
                            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()),
                                                                  null_values=[""]))
    return np.column_stack([table.column(i).to_numpy(zero_copy_only=False) for i in range(width)])


def _csv(text: bytes, start: int, width: int, *, wide: bool) -> native_numbers.Matrix | None:
    """csv_matrix 16 bytes at a time (wide) or byte by byte."""
    saved = native_numbers.WIDE
    native_numbers.WIDE = wide
    try:
        return native_numbers.csv_matrix(text, start, width)
    finally:
        native_numbers.WIDE = saved


def _padded(lines: list[list[str]], pad: bool) -> list[list[str]]:
    """With pad, two more rows after the random ones, so that every random cell has the 16 bytes after it that
    the wide reader reads a number 16 bytes at a time with (the last cells of a body it reads byte by byte)."""
    return lines + [["1234567.125"] * len(lines[0])] * 2 if pad else lines


def test_the_library_is_built_and_loaded() -> None:
    assert native_numbers.LIBRARY is not None, (
        f"{native_numbers.LIBRARY_PATH} is missing: `make` builds it (python native/build.py, needs rustc)")


# ---------------------------------------------------------------------------------------------
# CSV


@st.composite
def csv_grids(draw: st.DrawFn, cell: st.SearchStrategy[str]) -> list[list[str]]:
    width = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 12))
    empty = st.just("") if width > 1 else st.nothing()  # a 1-column empty cell is an empty line
    return [[draw(st.one_of(cell, empty)) for _ in range(width)] for _ in range(rows)]


@pytest.mark.parametrize("wide", [True, False])
@settings(max_examples=300, deadline=None)
@given(lines=csv_grids(plain), crlf=st.booleans(), last_newline=st.booleans(), pad=st.booleans())
def test_csv_of_plain_numbers_reads_as_float_and_pyarrow_read_it(
    lines: list[list[str]], crlf: bool, last_newline: bool, pad: bool, wide: bool
) -> None:
    lines = _padded(lines, pad)
    end = "\r\n" if crlf else "\n"
    text = ("h" + end + end.join(",".join(line) for line in lines) + (end if last_newline else "")).encode()
    got = _csv(text, text.index(b"\n") + 1, len(lines[0]), wide=wide)
    assert got is not None, text[:300]
    want = _reference_csv(lines)
    _same(got.values, want)
    assert got.values.flags.f_contiguous and got.complete == (not np.isnan(want).any())
    _same(got.values, _pyarrow_csv(text[text.index(b"\n") + 1:], len(lines[0])))


@pytest.mark.parametrize("wide", [True, False])
@settings(max_examples=300, deadline=None)
@given(lines=csv_grids(plain), bad=refused, where=st.data(), pad=st.booleans())
def test_csv_with_any_other_cell_is_sent_back(
    lines: list[list[str]], bad: str, where: st.DataObject, pad: bool, wide: bool
) -> None:
    row = where.draw(st.integers(0, len(lines) - 1))
    col = where.draw(st.integers(0, len(lines[0]) - 1))
    lines[row][col] = bad
    lines = _padded(lines, pad)
    text = ("\n".join(",".join(line) for line in lines) + "\n").encode()
    assert _csv(text, 0, len(lines[0]), wide=wide) is None, text[:300]


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("text, width", [
    (b"1,2\n3\n", 2), (b"1,2\n3,4,5\n", 2), (b"1,2\n\n3,4\n", 2), (b"1\n\n2\n", 1), (b"1,2\n3,4\n\n", 2),
    (b"1,2\r3,4\n", 2), (b"1,2\r\r\n", 2), (b"1,2,\n", 2), (b",\n", 3), (b"1,2\n3,4", 3),
    (b"1,2\r\n3,4\r", 2), (b"1,2\n3,4\r\r\n", 2), (b"1,2\n3,4\n" * 20 + b"5\n", 2), (b"1,2\n" * 20 + b"\n", 2),
    (b"1,2\n" * 20 + b"12345678901234567.5x,2\n" + b"1,2\n" * 20, 2), (b"1,2\n" * 20 + b"1,2,3\n" + b"1,2\n" * 20, 2),
])
def test_csv_of_another_shape_is_sent_back(text: bytes, width: int, wide: bool) -> None:
    assert _csv(text, 0, width, wide=wide) is None


def _big_csv(rows: int, width: int, seed: int) -> tuple[list[list[str]], bytes]:
    rng = np.random.default_rng(seed)
    lines = [[repr(float(v)) for v in row] for row in rng.normal(0, 1e3, (rows, width)).round(rng.integers(0, 8))]
    return lines, ("\n".join(",".join(line) for line in lines) + "\n").encode()


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_a_big_csv_body_read_in_two_halves_is_the_whole(seed: int, wide: bool) -> None:
    lines, text = _big_csv(9_000, 7, seed)
    assert len(text) >= 256 * 1024  # native/numbers.rs SPLIT_MIN_BYTES: two threads
    got = _csv(text, 0, 7, wide=wide)
    assert got is not None and got.complete
    _same(got.values, _reference_csv(lines))


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("row", [0, 4_499, 4_500, 8_999])
def test_a_bad_cell_in_either_half_of_a_big_csv_body_sends_it_back(row: int, wide: bool) -> None:
    lines, _ = _big_csv(9_000, 7, 0)
    lines[row][3] = "1e400"
    text = ("\n".join(",".join(line) for line in lines) + "\n").encode()
    assert _csv(text, 0, 7, wide=wide) is None


# ---------------------------------------------------------------------------------------------
# JSON rows


@st.composite
def json_grids(draw: st.DrawFn, cell: st.SearchStrategy[str]) -> list[list[str]]:
    width = draw(st.integers(1, 6))
    return draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1, max_size=12))


def _json_rows(lines: list[list[str]], blank: str) -> bytes:
    return ("[" + f",{blank}".join("[" + f",{blank}".join(line) + "]" for line in lines) + "]").encode()


@settings(max_examples=300, deadline=None)
@given(lines=json_grids(plain), blank=st.sampled_from(["", " ", "\n\t", "\r\n "]))
def test_json_rows_of_plain_numbers_read_as_orjson_reads_them(lines: list[list[str]], blank: str) -> None:
    rows = _json_rows(lines, blank)
    got = native_numbers.json_rows_matrix(rows, len(lines[0]))
    assert got is not None, rows[:300]
    _same(got, np.array(orjson.loads(rows), dtype=np.float64))
    _same(got, _reference_csv(lines))


@settings(max_examples=300, deadline=None)
@given(lines=json_grids(plain), bad=st.sampled_from([*REFUSED, "null", "[1]", "{}", ""]), where=st.data())
def test_json_rows_with_any_other_cell_are_sent_back(lines: list[list[str]], bad: str, where: st.DataObject) -> None:
    lines[where.draw(st.integers(0, len(lines) - 1))][where.draw(st.integers(0, len(lines[0]) - 1))] = bad
    rows = _json_rows(lines, "")
    assert native_numbers.json_rows_matrix(rows, len(lines[0])) is None, rows[:300]


@pytest.mark.parametrize("rows, width", [
    (b"[[1,2],[3]]", 2), (b"[[1,2],[3,4,5]]", 2), (b"[[1,2]],[[3,4]]", 2), (b"[[1,2],]", 2), (b"[[1,2][3,4]]", 2),
    (b"[[1,2],[3,4]]x", 2), (b"[[1,[2]],[3,4]]", 2), (b"[1,2]", 2), (b"[[1,2],[3,4]", 2), (b"[]", 2), (b"[[]]", 1),
])
def test_json_rows_of_another_shape_are_sent_back(rows: bytes, width: int) -> None:
    assert native_numbers.json_rows_matrix(rows, width) is None


@pytest.mark.parametrize("blank", ["", " \n"])
def test_big_json_rows_read_in_two_halves_are_the_whole(blank: str) -> None:
    lines, _ = _big_csv(9_000, 7, 1)
    rows = _json_rows(lines, blank)
    got = native_numbers.json_rows_matrix(rows, 7)
    assert got is not None
    _same(got, np.array(orjson.loads(rows)))


# ---------------------------------------------------------------------------------------------
# Random bytes: a wrong matrix or a crash would show here


@settings(max_examples=500, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 4), kind=st.sampled_from(["csv", "json", "bytewise csv"]))
@example(seed=0, flips=1, kind="csv")
def test_mutated_bodies_read_as_the_reference_or_are_sent_back(seed: int, flips: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    lines = [[repr(float(v)) for v in row] for row in rng.normal(0, 10, (8, 3)).round(rng.integers(0, 14))]
    csv = ("\n".join(",".join(line) for line in lines) + "\n").encode()
    body = bytearray(_json_rows(lines, "") if kind == "json" else csv)
    alphabet = b"0123456789-+.eE,[]\n\r \t\"nul"
    for _ in range(flips):
        at = int(rng.integers(0, len(body)))
        action = int(rng.integers(0, 3))
        if action == 0:
            body[at] = alphabet[int(rng.integers(0, len(alphabet)))]
        elif action == 1:
            del body[at]
        else:
            body.insert(at, alphabet[int(rng.integers(0, len(alphabet)))])
    data = bytes(body)
    if kind == "json":
        got = native_numbers.json_rows_matrix(data, 3)
        if got is not None:
            _same(got, np.array(orjson.loads(data), dtype=np.float64))
        return
    found = _csv(data, 0, 3, wide=kind == "csv")
    if found is not None:
        _same(found.values, _pyarrow_csv(data, 3))


# ---------------------------------------------------------------------------------------------
# Per-class answers (the layout's bytes against the plain answer: tests/unit/test_scoring_json_rows.py)


@pytest.mark.parametrize("columns, rows", [
    ([b"[1,2]", b"[3]"], 2), ([b"[1,2]", b"[3,4,5]"], 2), ([b"[1,2]"], 3), ([b"[1,,2]"], 3), ([b"[]"], 1),
    ([b"[1,2"], 2), ([b"1,2]"], 2), ([b""], 1), ([b"[1,2]", b"[3,4]"], 1),
])
def test_per_class_columns_of_another_count_are_sent_back(columns: list[bytes], rows: int) -> None:
    assert native_numbers.per_class_json(columns, [b'"k"'] * len(columns), rows) is None


def test_per_class_json_lays_out_one_object_per_row() -> None:
    got = native_numbers.per_class_json([b"[0.5,null,1e-05]", b"[0.5,1.0,0.99999]"], [b'"a,b"', b'"\\"]"'], 3)
    assert got is not None
    assert orjson.loads(got) == [{"a,b": 0.5, '"]': 0.5}, {"a,b": None, '"]': 1.0}, {"a,b": 1e-05, '"]': 0.99999}]


# ---------------------------------------------------------------------------------------------
# Laid-out rows: the general layout, and CSV results against pyarrow's writer byte for byte


def test_lay_out_writes_pieces_tokens_and_looked_up_keys() -> None:
    lookup = native_numbers.Lookup(1, np.array([1, 0, 1]), [b'"b"', b'"a,"'])
    got = native_numbers.lay_out([b'["x","y","z"]', b"", b"[1.0,null,2.5e-7]"], [b"<", b"|", b"|", b">"], b";", 3,
                                 lookup=lookup, head=b"{", tail=b"}")
    assert got == b'{<"x"|"a,"|1.0>;<"y"|"b"|null>;<"z"|"a,"|2.5e-7>}'
    csv = native_numbers.lay_out([b"[1.0,null,2.5e-7,-0.0,15000000000.0]"], [b"", b"\n"], b"", 5, csv=True)
    assert csv == b"1\n\n2.5e-7\n-0\n1.5e+10\n"


@given(start=st.integers(0, 10**15), rows=st.integers(1, 300))
def test_counted_ids_are_the_default_ids_text(start: int, rows: int) -> None:
    from shared.id_text import default_id_text
    from shared.prediction_log import DefaultIds
    from shared.scoring import ids_json

    laid_out = native_numbers.lay_out([b""], [b'"r-', b'"'], b",", rows, counter=native_numbers.Counter(0, start),
                                      head=b"[", tail=b"]")
    _, text = default_id_text("r", start, rows, before=b'"', after=b'",')
    assert laid_out == b"[" + text.tobytes()[:-1] + b"]"
    assert ids_json(DefaultIds("r", rows, start)) == laid_out
    assert orjson.loads(laid_out) == [f"r-{start + i}" for i in range(rows)]


@pytest.mark.parametrize("positions", [[0, 2], [0, -1]])
def test_lay_out_refuses_a_key_position_outside_the_keys(positions: list[int]) -> None:
    lookup = native_numbers.Lookup(0, np.array(positions), [b"a", b"b"])
    assert native_numbers.lay_out([b""], [b"", b"\n"], b"", 2, lookup=lookup) is None


# every double pyarrow may meet: extremes, subnormals, integral values in and out of plain notation
doubles = st.one_of(st.floats(), st.floats(width=32), st.integers(-(2**60), 2**60).map(float),
                    st.builds(lambda m, e: m * 10.0**e, st.floats(-10, 10), st.integers(-12, 22)))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rows=st.integers(1, 40), classes=st.integers(0, 3), labels=st.sampled_from(
    ["keys", "float", "int"]), default_ids=st.booleans())
def test_results_csv_is_pyarrows_csv_byte_for_byte(data: st.DataObject, rows: int, classes: int, labels: str,
                                                   default_ids: bool) -> None:
    from shared import arrow_bodies
    from shared.prediction_log import DefaultIds

    keys = data.draw(st.lists(st.text(min_size=1, max_size=4), min_size=max(classes, 1), max_size=max(classes, 1),
                              unique=True))
    index = None
    if labels == "keys":
        index = np.array(data.draw(st.lists(st.integers(0, len(keys) - 1), min_size=rows, max_size=rows)))
        predictions = np.array([keys[i] for i in index], dtype=object)
    elif labels == "float":
        predictions = np.array(data.draw(st.lists(doubles, min_size=rows, max_size=rows)))
    else:
        predictions = np.array(data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows)))
    probabilities = None
    if classes:
        cells = data.draw(st.lists(doubles, min_size=rows * classes, max_size=rows * classes))
        probabilities = np.array(cells).reshape(rows, classes)
        if data.draw(st.booleans()):
            with np.errstate(over="ignore"):  # too big for float32: infinity, which pyarrow's writer writes
                probabilities = probabilities.astype(np.float32)
    ids = DefaultIds("rid-1", rows, data.draw(st.integers(0, 10**6))) if default_ids else [
        f"id.{i}:{rows}" for i in range(rows)]
    class_keys = tuple(keys)
    table = arrow_bodies.results_table(predictions, probabilities, class_keys, ids, 7, index)
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    assert arrow_bodies.results_csv(predictions, probabilities, class_keys, ids, 7, index) == sink.getvalue()
    finite = [v for v in (predictions, probabilities) if v is not None and v.dtype.kind == "f"]
    if not any(np.isinf(v).any() for v in finite):  # infinity (no JSON spelling) goes to pyarrow's writer
        assert arrow_bodies._native_results_csv(predictions, probabilities, class_keys, ids, 7, index) is not None
    header = arrow_bodies.results_csv_header(class_keys, probabilities is not None)
    assert sink.getvalue().startswith(header)
    assert arrow_bodies.results_csv(predictions, probabilities, class_keys, ids, 7, index, header=False) == (
        sink.getvalue()[len(header):])


def test_numbers_that_pyarrow_spells_longer_still_fit_the_layout() -> None:
    """orjson's 1e-6 is pyarrow's 0.000001: a dozen classes of such probabilities outgrow their text."""
    from shared import arrow_bodies
    from shared.prediction_log import DefaultIds

    rows, keys = 50, tuple(f"c{k}" for k in range(12))
    probabilities, index = np.full((rows, len(keys)), 1e-6), np.zeros(rows, dtype=np.int64)
    labels, ids = np.array([keys[0]] * rows, dtype=object), DefaultIds("r", rows)
    laid_out = arrow_bodies._native_results_csv(labels, probabilities, keys, ids, 3, index)
    sink = io.BytesIO()
    pa_csv.write_csv(arrow_bodies.results_table(labels, probabilities, keys, ids, 3, index), sink)
    assert laid_out is not None and arrow_bodies.results_csv_header(keys, True) + laid_out == sink.getvalue()
