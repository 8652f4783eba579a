"""Big numeric dataframe_split bodies: rows of numbers through the native reader or simdjson (shared.json_rows),
rows with nulls through pyarrow's CSV reader (shared.arrow_bodies.read_split_rows).

Each path must give exactly the general path's arrays for every body it takes, and take no body the general
path would read differently: a number strict JSON refuses (.5, 5., +5, 05), a ragged or nested row or
anything not a plain row of numbers sends the body back (None), so the general path answers with its messages.
"""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import arrow_bodies, json_rows, native_numbers, scoring
from shared.errors import BadRequest
from shared.prediction_log import DefaultIds
from shared.scoring import LoadedModel, read_request
from tests.unit.test_scoring_columnar import NUMERIC, _load, _same_arrays, numeric_classifier

MAX = 50_000_000
Reader = Callable[[bytes, scoring.Signature], "scoring.ScoringRequest | None"]


def _arrow_only(body: bytes, signature: scoring.Signature) -> scoring.ScoringRequest | None:
    parts = json_rows.split_rows(body, signature)
    return None if parts is None else arrow_bodies.read_split_rows(parts, signature)


def _simdjson_only(body: bytes, signature: scoring.Signature) -> scoring.ScoringRequest | None:
    with mock.patch.object(native_numbers, "LIBRARY", None):
        parts = json_rows.split_rows(body, signature)
        return None if parts is None else json_rows._numbers(parts, signature)


def _native_only(body: bytes, signature: scoring.Signature) -> scoring.ScoringRequest | None:
    assert native_numbers.LIBRARY is not None
    with mock.patch.object(json_rows, "_simdjson_matrix", lambda rows, width: None):
        parts = json_rows.split_rows(body, signature)
        return None if parts is None else json_rows._numbers(parts, signature)


def _read_split(body: bytes, signature: scoring.Signature) -> scoring.ScoringRequest | None:
    return json_rows.read_split(body, signature, arrow_min_bytes=0)  # rows with nulls to pyarrow at any size


READERS: dict[str, Reader] = {"read_split": _read_split, "arrow": _arrow_only, "simdjson": _simdjson_only,
                              "native": _native_only}


@pytest.fixture(scope="module", params=["double", "float"])
def num(request: pytest.FixtureRequest) -> LoadedModel:
    return _load(numeric_classifier(request.param), "num")


def _general(model: LoadedModel, body: bytes) -> scoring.ScoringRequest:
    """What the general path makes of a body (orjson or the stdlib, then the matrix or the cell path)."""
    doc = scoring._load_json(body)
    fast = scoring._numeric_rows(doc, model.signature, body)
    if fast is not None:
        return fast
    names, columns = scoring._table_from_json(doc, model.signature)
    return scoring._convert(names, columns, model.signature, scoring._json_column, None, scoring._params_ids(doc))


def _body(rows: list[list[Any]], columns: list[str], *, blanks: bool, ids: list[str] | None = None) -> bytes:
    doc: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": rows}}
    if ids is not None:
        doc["params"] = {"ids": ids}
    if blanks:  # what Python's json.dumps (and so requests' json=) sends
        return json.dumps(doc).encode()
    return orjson.dumps(doc)


cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0, -0.0, 0.5, -0.05, 1e-5, 1e300, 5e-324, 10]),
    st.none(),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 30).flatmap(lambda n: st.lists(st.lists(cells, min_size=3, max_size=3), min_size=n,
                                                            max_size=n)),
       order=st.permutations(NUMERIC), blanks=st.booleans(), with_ids=st.booleans())
def test_every_body_it_takes_gives_the_general_path_s_arrays(
    num: LoadedModel, rows: list[list[Any]], order: list[str], blanks: bool, with_ids: bool,
) -> None:
    ids = [f"row-{i}" for i in range(len(rows))] if with_ids else None
    body = _body(rows, list(order), blanks=blanks, ids=ids)
    answers = {name: read(body, num.signature) for name, read in READERS.items()}
    try:
        general = _general(num, body)
    except BadRequest:  # a value beyond float32 for a float32 input: the general path names it
        assert num.signature.has_float32 and not any(answers.values())
        return
    nulls = any(cell is None for row in rows for cell in row)
    assert (answers["simdjson"] is None) == nulls, body[:200]  # simdjson reads numbers only
    long_ints = any(type(cell) is int and len(str(abs(cell))) > 18 for row in rows for cell in row)
    assert (answers["native"] is None) == (nulls or long_ints), body[:200]  # so does the native reader
    for name, fast in answers.items():
        if name in ("simdjson", "native") and answers[name] is None:
            continue
        assert fast is not None, (name, body[:200])
        assert fast.rows == general.rows and fast.ids == general.ids
        _same_arrays(fast.inputs, general.inputs)


@pytest.mark.parametrize("data", [
    b"[[1e05,1E+5,-0.0]]", b"[[0,0.0,-0]]", b"[[1,2,3],[4,5,6]]", b"[[null,null,null]]", b"[[10,100.25,-3e-2]]",
    b"[[1,2,3]] ", b"[[1, 2, 3], [4, 5, 6]]", b"[[1,null,3],[4,5,6]]", b"[[1,2,3],\n\t[4,5,6]]",
    b"[[18446744073709551615,9007199254740993,-9223372036854775808]]",
])
def test_valid_json_numbers_are_taken(num: LoadedModel, data: bytes) -> None:
    # a "data" inside a string is escaped (\"data\"), so the key is still the only match
    head = b'{"params":{"x":"\\"data\\":[[9]]"},"dataframe_split":{"columns":["a","b","c"],"data":'
    body = head + data + b"}}"
    fast = _read_split(body, num.signature)
    assert fast is not None
    _same_arrays(fast.inputs, _general(num, body).inputs)


@pytest.mark.parametrize("data", [
    b"[[.5,1,2]]", b"[[5.,1,2]]", b"[[5.e3,1,2]]", b"[[+5,1,2]]", b"[[05,1,2]]", b"[[-05,1,2]]", b"[[1,2,-.5]]",
    b"[[1 2,3,4]]", b'[[1,2,"3"]]', b"[[1,2,true]]", b"[[1,2,NaN]]", b"[[1,2,1e400]]",
    b"[[1,2,[3]]]", b"[[1,2],[3,4,5]]", b"[[],[1,2,3]]", b"[[1,2,3,]]", b"[[1,,3]]", b"[[1,2,3]],[[4,5,6]]",
    b"[[[1,2,3]]]", b"[[1,2,3]]x", b"[[1,2,3],4,[5,6]]", b"[[1,2,3],[4,5,6],7]", b"[[1,[2,3]],[4,5,6]]",
    b"[[1,2,3,4],[5,6]]", b"[[1,2,3],[4,5,6],[]]", b"[[1,2,3],[[4],5,6]]", b"[[1,2,3],[4,5,6]],[1,2,3]",
    b"[[1,2,null],[4,5,[6]]]", b"[[1,2,3,[4,5]],6]", b"[[1,2],7,[1,2,3,[4,5,6]]]", b"[[1,2,null],[4,5]]",
])
@pytest.mark.parametrize("reader", READERS)
def test_anything_else_goes_back_to_the_general_path(num: LoadedModel, data: bytes, reader: str) -> None:
    body = b'{"dataframe_split":{"columns":["a","b","c"],"data":' + data + b"}}"
    assert READERS[reader](body, num.signature) is None


def test_small_rows_with_nulls_are_left_to_orjson_and_read_the_same(num: LoadedModel) -> None:
    rows = [[1.5, None, 3], *([[4.25, 5.5, 6.125]] * 600)]
    body = _body(rows, list(NUMERIC), blanks=False)
    assert scoring.BIG_JSON_MIN_BYTES <= len(body) < json_rows.ARROW_ROWS_MIN_BYTES
    assert json_rows.read_split(body, num.signature) is None and _read_split(body, num.signature) is not None
    _same_arrays(read_request(body, "application/json", num.signature, MAX).inputs, _general(num, body).inputs)


def test_an_integer_beyond_64_bits_reads_as_the_general_path_reads_it(num: LoadedModel) -> None:
    body = b'{"dataframe_split":{"columns":["a","b","c"],"data":[[1,2,3],[4,5,12345678901234567890123]]}}'
    assert _simdjson_only(body, num.signature) is None  # simdjson stops at 64 bits
    _same_arrays(read_request(body, "application/json", num.signature, MAX).inputs, _general(num, body).inputs)


@pytest.mark.parametrize("body", [
    b'{"dataframe_split":{"columns":["a","b","c"],"data":[[1,2,3]]},"params":{"data":[[1,2,3]]}}',
    b'{"dataframe_split":{"columns":["a","b","c"],"data":[[1,2,3]],"extra":1}}',
    b'{"dataframe_split":{"columns":["a","b","c"],"data":[[1,2,3]]},"inputs":[[1,2,3]]}',
    b'{"dataframe_split":{"columns":["a","b","b"],"data":[[1,2,3]]}}',
    b'{"dataframe_split":{"columns":["a","b","data"],"data":[[1,2,3]]}}',
    b'{"dataframe_records":[{"a":1,"b":2,"c":3}],"data":[[1,2,3]]}',
    b'{"dataframe_split":{"columns":["a","b","c"],"data":[[1,2,3]]}',
])
def test_a_body_whose_shape_it_cannot_vouch_for_goes_back(num: LoadedModel, body: bytes) -> None:
    assert json_rows.read_split(body, num.signature) is None


def test_a_big_body_takes_the_path_and_a_refused_one_keeps_the_general_message(
    num: LoadedModel, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    rows = np.round(rng.normal(size=(4000, 3)), 6).tolist()
    body = _body(rows, list(NUMERIC), blanks=False)
    assert len(body) >= scoring.BIG_JSON_MIN_BYTES
    taken: list[bool] = []
    real = json_rows.read_split

    def spy(body: bytes, signature: scoring.Signature) -> scoring.ScoringRequest | None:
        result = real(body, signature)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(json_rows, "read_split", spy)
    _same_arrays(read_request(body, "application/json", num.signature, MAX).inputs, _general(num, body).inputs)
    bad = body.replace(b"[[", b"[[.5,", 1).replace(b"],[", b"],[1,", 1)  # first two rows: .5 and one cell more
    with pytest.raises(BadRequest) as refused:
        read_request(bad, "application/json", num.signature, MAX)
    assert taken == [True, False]
    assert "not valid JSON" in refused.value.message


_NO_PANDAS_SCRIPT = """
import hashlib, io, sys
import pyarrow as pa, pyarrow.csv as pa_csv, pyarrow.ipc as pa_ipc, pyarrow.parquet as pq
from shared.scoring import ModelCache, score
model, split, csv = (open(path, "rb").read() for path in sys.argv[1:4])
table = pa_csv.read_csv(pa.py_buffer(csv))
arrow_body, parquet_body = io.BytesIO(), io.BytesIO()
with pa_ipc.new_stream(arrow_body, table.schema) as writer:
    writer.write_table(table)
pq.write_table(table, parquet_body)
cache = ModelCache(lambda m, a: (1, "e"), lambda m, v: (model, hashlib.sha256(model).hexdigest()), 60)
arrow = "application/vnd.apache.arrow.stream"
for body, kind, accept in ((split, "application/json", None), (split, "application/json", arrow),
                           (csv, "text/csv", "text/csv"), (arrow_body.getvalue(), arrow, arrow),
                           (parquet_body.getvalue(), "application/x-parquet", None)):
    status, answer, _ = score(cache, "num", body, kind, max_bytes=10**8, accept=accept)
    assert status == 200, (kind, answer)
print(sorted(m for m in ("pandas", "sklearn", "pyarrow") if m in sys.modules), flush=True)
# Leave without the interpreter's teardown: about 1 run in 30 here, an Arrow (Parquet) thread still alive then
# aborts the process ("terminate called without an active exception", apache/arrow#34314) after all is done.
import os; os._exit(0)
"""


def test_big_bodies_of_every_format_score_without_loading_pandas(tmp_path: Path) -> None:
    """pyarrow's own numpy conversions import pandas on first use; the scoring path must not (shared.arrow_numpy)."""
    rows = np.random.default_rng(1).normal(size=(3000, 3)).round(5)
    csv = ("a,b,c\n" + "\n".join(",".join(map(repr, r)) for r in rows.tolist()) + "\n").encode()
    files = {"model.onnx": numeric_classifier("double"),
             "split.json": orjson.dumps({"dataframe_split": {"columns": list(NUMERIC), "data": rows.tolist()}}),
             "body.csv": csv}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", _NO_PANDAS_SCRIPT, *(str(tmp_path / n) for n in files)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['pyarrow']"


# ---------------------------------------------------------------------------------------------
# Big answers: ids and per-class probabilities written in bulk serialise exactly as the plain answer


probabilities = st.one_of(st.floats(0, 1), st.just(math.nan), st.floats(width=32, min_value=0, max_value=1))
# class keys made of JSON's structural characters and "%" too: the row template is filled by %-formatting
class_keys = st.one_of(st.text(max_size=4), st.text(alphabet='[],:{}"\\%0', max_size=4))


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 40), keys=st.lists(class_keys, min_size=1, max_size=3, unique=True),
       data=st.data(), default_ids=st.booleans(), wide=st.booleans())
def test_a_bulk_answer_serialises_to_the_same_bytes(
    rows: int, keys: list[str], data: st.DataObject, default_ids: bool, wide: bool,
) -> None:
    values = np.array(data.draw(st.lists(st.lists(probabilities, min_size=len(keys), max_size=len(keys)),
                                         min_size=rows, max_size=rows)), dtype=np.float64 if wide else np.float32)
    labels = np.array([keys[i % len(keys)] for i in range(rows)], dtype=object)
    ids: Sequence[str] = DefaultIds("req-1.a:b_c", rows, 3) if default_ids else [f"id-{i}" for i in range(rows)]
    model = types.SimpleNamespace(name="m", version=4, signature=types.SimpleNamespace(class_keys=tuple(keys)))
    plain = scoring._json_result(model, labels, values, ids)  # type: ignore[arg-type]
    bulk = scoring._bulk_json_result(model, labels, values, ids)  # type: ignore[arg-type]
    with mock.patch.object(native_numbers, "LIBRARY", None):  # the row template instead of the native layout
        templated = scoring._bulk_json_result(model, labels, values, ids)  # type: ignore[arg-type]
    option = orjson.OPT_SERIALIZE_NUMPY
    assert orjson.dumps(bulk, option=option) == orjson.dumps(plain, option=option)
    assert orjson.dumps(templated, option=option) == orjson.dumps(plain, option=option)


def test_a_big_json_answer_is_written_in_bulk_and_reads_as_before() -> None:
    rows = np.random.default_rng(2).normal(size=(scoring._BULK_JSON_ROWS, 3)).round(4).tolist()
    model = numeric_classifier("double")
    cache = scoring.ModelCache(lambda m, a: (1, "e"), lambda m, v: (model, hashlib.sha256(model).hexdigest()), 60)
    status, answer, _ = scoring.score(cache, "num", _body(rows, list(NUMERIC), blanks=False), "application/json",
                                      max_bytes=MAX)
    assert status == 200 and isinstance(answer, dict)
    assert isinstance(answer["probabilities"], orjson.Fragment)
    doc = orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))
    assert len(doc["prediction_ids"]) == len(doc["probabilities"]) == len(doc["predictions"]) == len(rows)
    assert doc["prediction_ids"][-1].endswith(f"-{len(rows) - 1}")
    assert all(abs(sum(p.values()) - 1) < 1e-9 for p in doc["probabilities"])


def test_a_row_whose_comma_count_wraps_around_the_narrow_sum_is_not_rectangular() -> None:
    # width 3 sums in uint8: a row of 259 numbers counts 259 commas = 3 (mod 256); the rows after it are
    # short by 256 numbers in all, so the document's totals still fit 200 rows of 3
    rows = [list(range(259))] + [[1, 2]] * 142 + [[1]] * 57
    assert sum(map(len, rows)) == 200 * 3
    assert not json_rows._rectangular(orjson.dumps(rows), 200, 3)
    assert json_rows._rectangular(orjson.dumps([[1, 2, 3]] * 200), 200, 3)


def test_threads_sharing_the_parsers_each_get_their_own_rows(num: LoadedModel) -> None:
    """simdjson parsers are not thread-safe: the pool hands each to one thread at a time."""
    rng = np.random.default_rng(9)
    bodies = [_body(rng.normal(size=(500 + 37 * i, 3)).round(6).tolist(), list(NUMERIC), blanks=False)
              for i in range(6)]
    expected = [_general(num, body) for body in bodies]
    failures: list[str] = []

    def work(k: int) -> None:
        for n in range(30):
            i = (k + n) % len(bodies)
            got = json_rows.read_split(bodies[i], num.signature)
            if got is None or got.rows != expected[i].rows or any(
                    not np.array_equal(got.inputs[f], expected[i].inputs[f]) for f in NUMERIC):
                failures.append(f"thread {k}, body {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and failures == []
