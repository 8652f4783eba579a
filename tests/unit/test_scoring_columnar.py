"""The columnar request paths give exactly what the general JSON path gives, and CSV/Arrow answers match JSON ones.

- JSON rows of plain numbers go straight into one float matrix (shared.scoring._numeric_rows); anything
  else falls back to the general path, so values and messages are the general path's.
- Big CSV bodies go through pyarrow's reader (shared.arrow_bodies.read_csv_body), Arrow IPC and Parquet
  bodies through typed columns; Accept: text/csv or application/vnd.apache.arrow.stream answers a table.
Property tests (hypothesis) draw random frames with missing values and a categorical column.
"""
from __future__ import annotations

import functools
import io
import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared import arrow_bodies, native_numbers, scoring
from shared.errors import BadRequest
from shared.memory_storage import MemoryStorage
from shared.scoring import Encoded, LoadedModel, ModelCache, load_model, read_request, score
from shared.serving import Scorer
from shared.settings import Settings
from tests.unit import onnx_fixtures as fx

MAX = 50_000_000
NUMERIC = ("a", "b", "c")
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/x-parquet"


@functools.cache
def numeric_classifier(numeric_type: str = "double") -> bytes:
    """A logistic regression over three numeric inputs only (the signature's all-float case, as breast-cancer)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=list(NUMERIC))
    target = (frame.a + frame.b > 0).astype(int)
    estimator = LogisticRegression()
    pipe = Pipeline([("pre", ColumnTransformer([("num", StandardScaler(), list(NUMERIC))])), ("model", estimator)])
    pipe.fit(frame, target)
    tensor = FloatTensorType if numeric_type == "float" else DoubleTensorType
    model = convert_sklearn(pipe, initial_types=[(n, tensor([None, 1])) for n in NUMERIC],
                            options={id(estimator): {"zipmap": False}})
    signature = {"name": "num", "task": "classification", "target": "y", "classes": [0, 1],
                 "features": [{"name": n, "kind": "numeric"} for n in NUMERIC], "categorical_missing": "missing"}
    prop = model.metadata_props.add()
    prop.key, prop.value = "mlops.signature", json.dumps(signature)
    return bytes(model.SerializeToString())


def _load(data: bytes, name: str) -> LoadedModel:
    return load_model(data, fx.sha256(data), name, 1)


@pytest.fixture(scope="module", params=["double", "float"])
def num(request: pytest.FixtureRequest) -> LoadedModel:
    return _load(numeric_classifier(request.param), "num")


@pytest.fixture(scope="module", params=["float", "double"])
def mixed(request: pytest.FixtureRequest) -> LoadedModel:
    """Two numeric inputs and a categorical one (the predictive-maintenance shape)."""
    return _load(fx.classifier(request.param), "churn")


def _read(model: LoadedModel, body: bytes, content_type: str | None) -> scoring.ScoringRequest:
    return read_request(body, content_type, model.signature, MAX)


def _same_arrays(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        a, b = left[name], right[name]
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert a.tolist() == b.tolist(), name


def _records_body(frame: pd.DataFrame) -> bytes:
    """The general path's reference: dataframe_records with JSON nulls."""
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
               for r in frame.to_dict(orient="records")]
    return json.dumps({"dataframe_records": records}).encode()


def _split_body(frame: pd.DataFrame) -> bytes:
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in frame.to_numpy().tolist()]
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": rows}}).encode()


def _csv_body(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, na_rep="", lineterminator="\n", float_format=lambda v: repr(float(v)))
    return buf.getvalue().encode()


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _ipc_body(frame: pd.DataFrame) -> bytes:
    table = _arrow_table(frame)
    sink = io.BytesIO()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _parquet_body(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_arrow_table(frame), sink)
    return sink.getvalue()


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)
cells = st.one_of(finite, st.integers(-1000, 1000).map(float), st.just(float("nan")))


@st.composite
def numeric_frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(1, 40))
    order = draw(st.permutations(NUMERIC))
    data = {n: draw(st.lists(cells, min_size=rows, max_size=rows)) for n in order}
    return pd.DataFrame(data, columns=list(order))


@st.composite
def mixed_frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(1, 40))
    order = draw(st.permutations(fx.FEATURES))
    categories = st.sampled_from(["L", "M", "H", "", "Zürich", "x y"])
    data: dict[str, list[Any]] = {n: draw(st.lists(cells, min_size=rows, max_size=rows)) for n in fx.NUMERIC}
    data["type"] = draw(st.lists(categories, min_size=rows, max_size=rows))
    return pd.DataFrame(data, columns=list(order))


# ---------------------------------------------------------------------------------------------
# Same arrays from every format


@settings(max_examples=60)
@given(frame=numeric_frames())
def test_numeric_rows_take_the_matrix_path_and_match_the_general_path(num: LoadedModel, frame: pd.DataFrame) -> None:
    general = _read(num, _records_body(frame), "application/json")
    body = _split_body(frame)
    assert scoring._numeric_rows(json.loads(body), num.signature, body) is not None
    _same_arrays(_read(num, body, "application/json").inputs, general.inputs)
    plain = json.dumps({"inputs": json.loads(body)["dataframe_split"]["data"]}).encode()
    if list(frame.columns) == list(NUMERIC):  # a plain list of rows is in feature order
        _same_arrays(_read(num, plain, None).inputs, general.inputs)


# Cells as the JSON parsers hand them over: orjson refuses NaN and Infinity, the stdlib fallback reads them
# as _NonFinite (scoring._load_json), so a plain float cell is always finite; a body with true or false never
# gets here (_numeric_rows sends it to the general path).
any_cell = st.one_of(finite, st.integers(-(2**70), 2**70), st.integers(10**308, 10**310), st.none(),
                     st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]).map(scoring._NonFinite),
                     st.text(max_size=2))


@settings(max_examples=200)
@given(rows=st.integers(1, 4).flatmap(
    lambda n: st.lists(st.lists(any_cell, min_size=3, max_size=3), min_size=n, max_size=n)))
def test_the_few_rows_matrix_check_decides_exactly_as_the_numpy_one(rows: list[list[Any]]) -> None:
    small, big = scoring._small_float_matrix(rows), scoring._float_matrix(rows)
    assert (small is None) == (big is None)
    if small is not None and big is not None:
        np.testing.assert_array_equal(small[0], big[0])  # NaN (a null) equals NaN here
        assert small[0].flags.f_contiguous and small[0].dtype == np.float64
        assert small[1] == big[1] == (not np.isnan(small[0]).any())  # complete: no null


@pytest.mark.parametrize("rows, start", [(0, 0), (1, 0), (1000, 0), (7, 123_456)])
def test_default_ids_become_the_same_arrow_column_without_python_strings(rows: int, start: int) -> None:
    from shared import arrow_bodies
    from shared.prediction_log import DefaultIds, default_prediction_ids

    column = arrow_bodies.id_column(DefaultIds("3f1c-a", rows, start))
    assert column.type == pa.string() and column.to_pylist() == default_prediction_ids("3f1c-a", rows, start)
    assert arrow_bodies.id_column(["x", "y"]).to_pylist() == ["x", "y"]


def test_the_session_runner_skips_only_python_checks(num: LoadedModel) -> None:
    feeds = {n: np.array([[0.5], [-1.0]], dtype=num.signature.features[0].dtype) for n in NUMERIC}
    outputs = list(num.signature.outputs)
    for ours, theirs in zip(num.run(outputs, feeds), num.session.run(outputs, feeds), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(Exception, match="a"):  # the native call still refuses a feed that misses an input
        num.run(outputs, {"b": feeds["b"], "c": feeds["c"]})

    class Plain:  # an onnxruntime without the native session attribute: the public run
        def run(self, outputs: Any, feeds: Any) -> str:
            return "public"

    assert scoring.session_runner(Plain())([], {}) == "public"  # type: ignore[arg-type]


@settings(max_examples=40)
@given(frame=numeric_frames())
def test_every_body_format_gives_the_numeric_model_the_same_arrays(
    num: LoadedModel, frame: pd.DataFrame
) -> None:
    general = _read(num, _records_body(frame), "application/json").inputs
    for body, content_type in ((_ipc_body(frame), ARROW), (_parquet_body(frame), PARQUET)):
        _same_arrays(_read(num, body, content_type).inputs, general)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "ARROW_CSV_MIN_BYTES", 0)  # every CSV body through the native reader
        body = _csv_body(frame)
        assert native_numbers.csv_matrix(body, body.index(b"\n") + 1, len(NUMERIC)) is not None
        assert scoring._arrow_csv(body, num.signature) is not None
        _same_arrays(_read(num, _csv_body(frame), "text/csv").inputs, general)
        patch.setattr(native_numbers, "LIBRARY", None)  # and through pyarrow's
        assert scoring._arrow_csv(_csv_body(frame), num.signature) is not None
        _same_arrays(_read(num, _csv_body(frame), "text/csv").inputs, general)
    _same_arrays(_read(num, _csv_body(frame), "text/csv").inputs, general)  # the stdlib reader


@settings(max_examples=40)
@given(frame=numeric_frames(), quoted=st.integers(0, 10**6), crlf=st.booleans())
def test_a_csv_body_with_carriage_returns_or_a_quote_in_its_rows_reads_as_the_stdlib_reads_it(
    num: LoadedModel, frame: pd.DataFrame, quoted: int, crlf: bool,
) -> None:
    general = _read(num, _records_body(frame), "application/json").inputs
    head, _, rows = _csv_body(frame).partition(b"\n")
    cells = rows.split(b",")
    at = quoted % len(cells)
    # the native reader refuses the quote (and reads "\r\n" line ends); the stdlib reader decides the rest
    first, *rest = cells[at].split(b"\n")  # a cell, or a row's last cell, its line end and the next row's first
    cells[at] = b"\n".join([b'"' + first + b'"', *rest])
    body = head + b"\n" + b",".join(cells)
    if crlf:
        body = head + b"\n" + body[len(head) + 1:].replace(b"\n", b"\r\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "ARROW_CSV_MIN_BYTES", 0)  # the fast path first: it hands the body on
        assert scoring._arrow_csv(body, num.signature) is None
        _same_arrays(_read(num, body, "text/csv").inputs, general)
    if crlf:  # line ends alone: the native reader takes the rows
        plain = head + b"\n" + rows.replace(b"\n", b"\r\n")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(scoring, "ARROW_CSV_MIN_BYTES", 0)
            assert scoring._arrow_csv(plain, num.signature) is not None
            _same_arrays(_read(num, plain, "text/csv").inputs, general)


@settings(max_examples=40)
@given(frame=mixed_frames())
def test_every_body_format_gives_a_model_with_a_categorical_input_the_same_arrays(
    mixed: LoadedModel, frame: pd.DataFrame
) -> None:
    general = _read(mixed, _records_body(frame), "application/json").inputs
    _same_arrays(_read(mixed, _split_body(frame), "application/json").inputs, general)
    for body, content_type in ((_ipc_body(frame), ARROW), (_parquet_body(frame), PARQUET)):
        _same_arrays(_read(mixed, body, content_type).inputs, general)
    # an empty CSV cell is a missing category, where JSON and Arrow keep "" as a category of its own
    as_csv = _read(mixed, _records_body(frame.replace({"type": {"": None}})), "application/json").inputs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "ARROW_CSV_MIN_BYTES", 0)
        _same_arrays(_read(mixed, _csv_body(frame), "text/csv").inputs, as_csv)
    _same_arrays(_read(mixed, _csv_body(frame), "text/csv").inputs, as_csv)


def test_a_big_csv_body_takes_the_pyarrow_reader_and_predicts_as_json(mixed: LoadedModel) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"torque": rng.normal(40, 10, 3000).round(3), "speed": rng.normal(1500, 99, 3000),
                          "type": rng.choice(["L", "M", "H", ""], 3000)})
    frame.loc[::7, "torque"] = np.nan
    body = _csv_body(frame)
    assert len(body) >= scoring.ARROW_CSV_MIN_BYTES and scoring._arrow_csv(body, mixed.signature) is not None
    from_csv = scoring.predict(mixed, _read(mixed, body, "text/csv").inputs)
    from_json = scoring.predict(mixed, _read(mixed, _records_body(frame), None).inputs)
    assert from_csv == from_json


# ---------------------------------------------------------------------------------------------
# The fast paths decline what they cannot vouch for; the general path answers with its messages


@pytest.mark.parametrize("rows, message", [
    ([[1.0, True, 2.0]], "column 'b' row 0: expected a number, got True"),
    ([[1.0, "2.5", 2.0]], "column 'b' row 0: expected a number, got '2.5'"),
    ([[1.0, 2.0]], "dataframe_split.data row 0 has 2 values; expected 3, one per column"),
])
def test_numeric_rows_with_a_boolean_a_string_or_a_short_row_get_the_general_message(
    num: LoadedModel, rows: list[list[Any]], message: str
) -> None:
    body = json.dumps({"dataframe_split": {"columns": list(NUMERIC), "data": rows}}).encode()
    assert scoring._numeric_rows(json.loads(body), num.signature, body) is None
    with pytest.raises(BadRequest) as err:
        _read(num, body, "application/json")
    assert err.value.message == message


@pytest.mark.parametrize("text, message", [
    (b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, NaN, 2]]}}',
     "column 'b' row 0: expected a finite number that fits float64, got NaN"),
    (b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 1e400, 2]]}}',
     "column 'b' row 0: expected a finite number that fits float64, got 1e400"),
])
def test_non_finite_numbers_in_numeric_rows_are_named_as_before(text: bytes, message: str) -> None:
    model = _load(numeric_classifier("double"), "num")
    with pytest.raises(BadRequest) as err:
        _read(model, text, "application/json")
    assert err.value.message.startswith(message)


def test_a_big_csv_body_with_nan_or_a_bad_cell_is_refused_with_the_stdlib_message(mixed: LoadedModel) -> None:
    good = "torque,speed,type\n" + "1.5,1400,L\n" * 2000
    for cell, message in (("nan", "column 'torque' row 2000: expected a finite number"),
                          ("1_0", "column 'torque' row 2000: expected a number, got '1_0'")):
        body = (good + f"{cell},1400,L\n").encode()
        assert len(body) >= scoring.ARROW_CSV_MIN_BYTES and scoring._arrow_csv(body, mixed.signature) is None
        with pytest.raises(BadRequest) as err:
            _read(mixed, body, "text/csv")
        assert err.value.message.startswith(message)


def test_arrow_and_parquet_bodies_are_checked_like_json(mixed: LoadedModel) -> None:
    frame = pd.DataFrame({"torque": [1.0, float("inf")], "speed": [2.0, 3.0], "type": ["L", None]})
    with pytest.raises(BadRequest) as err:
        _read(mixed, _ipc_body(frame), ARROW)
    assert err.value.message.startswith("column 'torque' row 1: expected a finite number")
    with pytest.raises(BadRequest) as err:
        _read(mixed, _parquet_body(frame.drop(columns=["speed"])), PARQUET)
    assert err.value.message.startswith("missing columns ['speed']")
    strings = pd.DataFrame({"torque": ["x"], "speed": [2.0], "type": ["L"]})
    with pytest.raises(BadRequest) as err:
        _read(mixed, _ipc_body(strings), ARROW)
    assert err.value.message.startswith("column 'torque': expected numbers, got a column of Arrow type ")
    for kind in (ARROW, PARQUET):
        with pytest.raises(BadRequest) as err:
            _read(mixed, b"not a table", kind)
        assert err.value.message.startswith("request body is not a valid ")


def test_a_null_category_in_an_arrow_body_is_the_missing_marker(mixed: LoadedModel) -> None:
    frame = pd.DataFrame({"torque": [1.0], "speed": [2.0], "type": pd.Categorical([None], categories=["L"])})
    inputs = _read(mixed, _ipc_body(frame), ARROW).inputs
    assert inputs["type"].tolist() == [[fx.MISSING]]


# ---------------------------------------------------------------------------------------------
# Answers per Accept, and what the prediction log gets from them


def _cache(data: bytes) -> ModelCache:
    return ModelCache(lambda m, a: (1, "e"), lambda m, v: (data, fx.sha256(data)), 60.0)


def _table(answer: Encoded) -> pa.Table:
    if answer.media_type == "text/csv":
        return pa_csv.read_csv(pa.py_buffer(answer.data),
                               convert_options=pa_csv.ConvertOptions(strings_can_be_null=False,
                                                                     column_types={"prediction": pa.string()}))
    return pa_ipc.open_stream(answer.data).read_all()


@pytest.mark.parametrize("accept, media", [("text/csv", "text/csv"), (ARROW, ARROW),
                                           ("application/json;q=0.5, text/csv", "application/json")])
def test_accept_picks_csv_or_arrow_answers_with_the_json_answer_s_numbers(accept: str, media: str) -> None:
    data = fx.classifier()
    body = json.dumps({"dataframe_records": [{"torque": 40.5, "speed": 1500, "type": "L"},
                                              {"torque": None, "speed": 1410.5, "type": "H"}]}).encode()
    status, expected, _ = score(_cache(data), "churn", body, None, max_bytes=MAX, request_id="r1")
    status2, answer, headers = score(_cache(data), "churn", body, None, max_bytes=MAX, request_id="r1",
                                     accept=accept)
    assert status == status2 == 200 and headers["x-model-version"] == "1"
    if media == "application/json":
        assert answer == expected
        return
    assert isinstance(answer, Encoded) and answer.media_type == media
    table = _table(answer).to_pydict()
    assert table["prediction_id"] == expected["prediction_ids"] == ["r1-0", "r1-1"]
    assert table["prediction"] == expected["predictions"]
    for cls in ("fail", "ok"):
        assert table[f"probability_{cls}"] == [p[cls] for p in expected["probabilities"]]
    assert table["model_version"] == [1, 1]


def test_errors_stay_json_whatever_the_accept() -> None:
    status, answer, _ = score(_cache(fx.classifier()), "churn", b"{}", None, max_bytes=MAX, accept="text/csv")
    assert status == 400 and isinstance(answer, dict) and answer["error_code"] == "BAD_REQUEST"


def test_the_prediction_log_gets_the_same_lines_from_a_csv_answer_as_from_json() -> None:
    storage = MemoryStorage()
    data = fx.classifier()
    storage.write("mlops", "x", b"")
    scorer = Scorer(storage, Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}))
    scorer.cache = _cache(data)
    body = json.dumps({"dataframe_records": [{"torque": 40.5, "speed": None, "type": "L"}]}).encode()
    scorer.score("churn", body, None, request_id="j1")
    scorer.score("churn", body, None, request_id="c1", accept="text/csv")
    scorer.close()
    lines = [json.loads(line) for name in storage.blob_names("predictions")
             for line in storage.read("predictions", name).data.decode().splitlines()]
    by_request = {line["request_id"]: line for line in lines}
    for key in ("inputs", "outputs", "model", "version"):
        assert by_request["j1"][key] == by_request["c1"][key], key
    assert by_request["c1"]["prediction_id"] == "c1-0"


def test_the_scoring_module_still_imports_without_pyarrow() -> None:
    code = "import sys, shared.scoring, shared.serving; print('pyarrow' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.integers(0, 70), min_size=1, max_size=12), trailing=st.booleans())
def test_the_quick_long_line_check_agrees_with_measuring_every_line(lines: list[int], trailing: bool) -> None:
    text = b"\n".join(b"1" * n for n in lines) + (b"\n" if trailing else b"")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrow_bodies, "CSV_FIELD_LIMIT", 40)  # the stdlib's 128 KiB, scaled down
        if len(text) > arrow_bodies.CSV_FIELD_LIMIT:  # read_csv_body asks only about bodies over the limit
            long_line = arrow_bodies._longest_line(text) > arrow_bodies.CSV_FIELD_LIMIT
            assert arrow_bodies._may_hold_a_long_line(text) == long_line
