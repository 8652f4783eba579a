"""Batch scoring cuts a CSV file into blocks of whole lines, parsed apart on two threads: whatever the file holds
(quotes, doubled quotes, quoted line ends, stray quotes, CRLF, blank lines, a missing last line end), the rows
must be exactly the rows pyarrow reads from the whole file in one go, or both must refuse it."""
from __future__ import annotations

import csv
import io
import json
from typing import Any
from unittest import mock

import onnx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import batch_scoring, native_numbers
from shared.memory_storage import MemoryStorage
from shared.scoring import ModelCache, ScoringRequest, Signature
from tests.unit import onnx_fixtures as fx
from tests.unit.test_scoring_columnar import NUMERIC, numeric_classifier

NUMBER = st.one_of(st.just(""), st.floats(-1e6, 1e6, allow_nan=False).map(repr), st.integers(-999, 999).map(str))
CATEGORY = st.text(alphabet=["L", "M", "x", " ", ",", '"', "\n", "\r", "é"], max_size=5)
ROW = st.tuples(NUMBER, NUMBER, CATEGORY, st.booleans())  # the flag: written raw (stray quotes), not by csv


@pytest.fixture(scope="module")
def signature() -> Signature:
    model = fx.classifier()
    return ModelCache(lambda m, a: (1, "e"), lambda m, v: (model, fx.sha256(model)), 60.0).get("churn").signature


def _csv(rows: list[tuple[str, str, str, bool]], line_end: str, quoting: int, blank_every: int,
         final_line_end: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end, quoting=quoting)
    out.write(f"torque,speed,type{line_end}")
    for i, (torque, speed, category, raw) in enumerate(rows):
        if raw:  # no quoting at all: a quote is then a plain character of the cell (or the line is ragged)
            out.write(f"{torque},{speed},{category.replace(',', '').replace(chr(10), '').replace(chr(13), '')}"
                      f"{line_end}")
        else:
            writer.writerow([torque, speed, category])
        if blank_every and i % blank_every == 0:
            out.write(line_end)
    text = out.getvalue()
    return (text if final_line_end else text.rstrip("\r\n")).encode()


def _whole(data: bytes, signature: Signature) -> pa.Table | str:
    layout = batch_scoring._CsvLayout(["torque", "speed", "type"], ["torque", "speed", "type"],
                                      batch_scoring._types(signature))
    try:
        return pa_csv.read_csv(io.BytesIO(data), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                               convert_options=layout.convert_options())
    except (pa.ArrowException, ValueError):
        return "refused"


def _cut(data: bytes, signature: Signature, chunk_bytes: int) -> pa.Table | str:
    storage = MemoryStorage()
    storage.write("scoring-requests", "churn/f.csv", data)
    try:
        chunks = batch_scoring._chunks(storage.open_read("scoring-requests", "churn/f.csv"), "csv", signature,
                                       chunk_bytes)
        batches = [_batch(c.parse(signature)) if isinstance(c, batch_scoring._Block) else c for c in chunks]
    except batch_scoring.Rejected as problem:
        assert problem.check == "format", problem.message
        return "refused"
    return pa.Table.from_batches(batches) if batches else "no rows"


def _batch(parsed: pa.RecordBatch | ScoringRequest) -> pa.RecordBatch:
    """A block's rows as a batch: pyarrow's, or the native reader's feeds (the signature's order), NaN as null."""
    if isinstance(parsed, pa.RecordBatch):
        return parsed
    return pa.RecordBatch.from_arrays([pa.array(v.ravel(), from_pandas=True) for v in parsed.inputs.values()],
                                      names=list(parsed.inputs))


@settings(max_examples=150)
@given(rows=st.lists(ROW, min_size=1, max_size=40), line_end=st.sampled_from(["\n", "\r\n"]),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]), blank_every=st.integers(0, 7),
       final_line_end=st.booleans(), chunk_bytes=st.integers(8, 160))
def test_blocks_of_whole_lines_read_as_the_whole_file(signature: Signature, rows: Any, line_end: str, quoting: int,
                                                      blank_every: int, final_line_end: bool,
                                                      chunk_bytes: int) -> None:
    data = _csv(rows, line_end, quoting, blank_every, final_line_end)
    whole, cut = _whole(data, signature), _cut(data, signature, chunk_bytes)
    if isinstance(whole, str) or isinstance(cut, str):
        assert whole == cut or (whole != "refused" and whole.num_rows == 0 and cut == "no rows"), (whole, cut)
    else:
        assert cut.to_pylist() == whole.to_pylist()


@pytest.fixture(scope="module")
def numeric() -> Signature:
    model = numeric_classifier("double")
    return ModelCache(lambda m, a: (1, "e"), lambda m, v: (model, fx.sha256(model)), 60.0).get("num").signature


@settings(max_examples=150)
@given(rows=st.lists(st.tuples(NUMBER, NUMBER, NUMBER), min_size=1, max_size=40), order=st.permutations(NUMERIC),
       line_end=st.sampled_from(["\n", "\r\n"]), blank_every=st.integers(0, 7), final_line_end=st.booleans(),
       chunk_bytes=st.integers(8, 160))
def test_blocks_of_numbers_read_by_the_native_reader_as_pyarrow_reads_the_whole_file(
    numeric: Signature, rows: Any, order: list[str], line_end: str, blank_every: int, final_line_end: bool,
    chunk_bytes: int,
) -> None:
    lines = [",".join(order)] + [",".join(row) + (line_end if blank_every and i % blank_every == 0 else "")
                                 for i, row in enumerate(rows)]
    text = line_end.join(lines) + (line_end if final_line_end else "")
    data = text.encode()
    layout = batch_scoring._csv_layout(lines[0].encode(), numeric)
    assert layout.numeric
    whole = pa_csv.read_csv(io.BytesIO(data), convert_options=layout.convert_options())
    read = native_numbers.csv_matrix
    natively: list[bool] = []
    with mock.patch.object(native_numbers, "csv_matrix",
                           lambda *args: natively.append(read(*args) is not None) or read(*args)):
        cut = _cut(data, numeric, chunk_bytes)
    assert any(natively) or blank_every or not natively  # blank lines (only) send blocks to pyarrow
    with mock.patch.object(native_numbers, "LIBRARY", None):
        by_pyarrow = _cut(data, numeric, chunk_bytes)
    assert not isinstance(cut, str) and not isinstance(by_pyarrow, str)
    assert cut.to_pylist() == whole.select(layout.wanted).to_pylist() == by_pyarrow.to_pylist()
    assert cut.schema == by_pyarrow.schema


def test_a_numeric_file_without_an_optional_input_is_read_as_pyarrow_reads_it() -> None:
    """The native reader reads the lines; the left-out optional input sends the block the batch's way, which
    fills it (the matrix alone would not know where the column goes)."""
    model = onnx.load_from_string(numeric_classifier("double"))
    for prop in model.metadata_props:
        if prop.key == "mlops.signature":
            signature = json.loads(prop.value)
            signature["features"][2]["optional"] = True
            prop.value = json.dumps(signature)
    data = model.SerializeToString()
    optional = ModelCache(lambda m, a: (1, "e"), lambda m, v: (data, fx.sha256(data)), 60.0).get("num").signature
    body = b"a,b\n" + b"".join(b"%d.5,-%d.25\n" % (i, i) for i in range(60))
    read = native_numbers.csv_matrix
    natively: list[bool] = []
    with mock.patch.object(native_numbers, "csv_matrix",
                           lambda *args: natively.append(read(*args) is not None) or read(*args)):
        cut = _cut(body, optional, 64)
    with mock.patch.object(native_numbers, "LIBRARY", None):
        by_pyarrow = _cut(body, optional, 64)
    assert natively and all(natively)
    assert not isinstance(cut, str) and not isinstance(by_pyarrow, str)
    assert cut.to_pylist() == by_pyarrow.to_pylist() and cut.num_rows == 60
