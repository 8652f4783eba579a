"""The packed companion graph (shared.onnx_rewrite.packed, embedded by export_onnx under PACKED_KEY).

Scoring runs it for requests whose parse knows no value is missing (ScoringRequest.matrix) and must answer
exactly what the model's own graph answers, byte for byte, for every body; a request with a missing value
goes to the model's graph; a companion that does not load or does not fit the model is ignored.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from dataclasses import replace
from typing import Any
from unittest import mock

import numpy as np
import onnx
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared import native_numbers, onnx_rewrite, scoring
from shared.scoring import PACKED_KEY, Encoded, LoadedModel, ModelCache, load_model, read_request, score
from tests.unit.test_scoring_columnar import NUMERIC, numeric_classifier
from tests.unit.test_scoring_json_rows import _body

MAX = 50_000_000


def _with_key(model: onnx.ModelProto, value: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    prop = copy.metadata_props.add()
    prop.key, prop.value = PACKED_KEY, value
    return copy.SerializeToString()


def numeric_regressor() -> bytes:
    """A ridge regression over the three numeric inputs."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=list(NUMERIC))
    pipe = Pipeline([("pre", ColumnTransformer([("num", StandardScaler(), list(NUMERIC))])), ("model", Ridge())])
    pipe.fit(frame, frame.a * 2 - frame.c)
    model = convert_sklearn(pipe, initial_types=[(n, DoubleTensorType([None, 1])) for n in NUMERIC])
    signature = {"name": "num", "task": "regression", "target": "y",
                 "features": [{"name": n, "kind": "numeric"} for n in NUMERIC]}
    prop = model.metadata_props.add()
    prop.key, prop.value = "mlops.signature", json.dumps(signature)
    return bytes(model.SerializeToString())


@functools.cache
def _rewritten(kind: str = "classifier") -> onnx.ModelProto:
    data = {"classifier": numeric_classifier("double"), "regressor": numeric_regressor(),
            "float classifier": numeric_classifier("float")}[kind]
    model = onnx.load_from_string(data)
    onnx_rewrite.rewrite(model)
    return model


@functools.cache
def _artifacts(kind: str = "classifier") -> tuple[bytes, bytes]:
    """(the rewritten model with its packed companion embedded, the same model without it)."""
    model = _rewritten(kind)
    companion = onnx_rewrite.packed(model)
    assert companion is not None
    return _with_key(model, base64.b64encode(companion.SerializeToString()).decode()), model.SerializeToString()


@functools.cache
def _cache(data: bytes) -> ModelCache:
    return ModelCache(lambda m, a: (1, "e"), lambda m, v: (data, hashlib.sha256(data).hexdigest()), 60)


def _load(data: bytes) -> LoadedModel:
    return load_model(data, hashlib.sha256(data).hexdigest(), "num", 1)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_an_all_double_model_loads_its_packed_graph(kind: str) -> None:
    packed, plain = _artifacts(kind)
    assert _cache(packed).get("num").packed is not None
    assert _cache(plain).get("num").packed is None


def _answer(data: bytes, body: bytes, content_type: str, accept: str | None) -> tuple[int, bytes]:
    status, answer, _ = score(_cache(data), "num", body, content_type, request_id="req-1", max_bytes=MAX,
                              accept=accept)
    if isinstance(answer, Encoded):
        return status, answer.data
    return status, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
                    st.integers(-(10**6), 10**6))
# complete rows (the packed graph), or rows that may hold nulls (the model's graph for those with one)
bodies = st.sampled_from([numbers, numbers | st.none()]).flatmap(lambda cells: st.integers(1, 400).flatmap(
    lambda n: st.lists(st.lists(cells, min_size=3, max_size=3), min_size=n, max_size=n)))


def _csv(rows: list[list[Any]]) -> bytes:
    lines = [",".join(NUMERIC)] + [",".join("" if v is None else repr(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=80, deadline=None)
@given(rows=bodies, form=st.sampled_from(["json", "json with blanks", "csv"]),
       accept=st.sampled_from([None, "text/csv", "application/vnd.apache.arrow.stream"]),
       kind=st.sampled_from(["classifier", "regressor"]))
def test_every_answer_is_the_model_graph_s_answer_byte_for_byte(
    rows: list[list[Any]], form: str, accept: str | None, kind: str,
) -> None:
    """Small and big bodies (orjson, simdjson, the stdlib's or pyarrow's CSV reader), with and without nulls,
    answered as JSON, CSV or Arrow, by a classifier and a regressor."""
    packed, plain = _artifacts(kind)
    body, kind = (_csv(rows), "text/csv") if form == "csv" else (_body(rows, list(NUMERIC), blanks=form != "json"),
                                                                 "application/json")
    assert _answer(packed, body, kind, accept) == _answer(plain, body, kind, accept)


def _refusing_graph(model: LoadedModel) -> LoadedModel:
    """The model with its own graph's runner refusing to run: only the packed graph can answer."""
    def refuse(outputs: Any, feeds: Any) -> Any:
        raise AssertionError("the model's own graph ran")

    copy = replace(model)
    object.__setattr__(copy, "run", refuse)
    return copy


@pytest.mark.parametrize("rows", [1, 3, 5, 600])
def test_complete_rows_run_the_packed_graph_and_rows_with_a_null_the_model_s(rows: int) -> None:
    loaded = _load(_artifacts()[0])
    values = np.random.default_rng(rows).normal(size=(rows, 3)).round(6).tolist()
    request = read_request(_body(values, list(NUMERIC), blanks=False), "application/json", loaded.signature, MAX)
    assert request.matrix is not None and request.matrix.shape == (3, rows)
    labels, _, _ = scoring.run_model(_refusing_graph(loaded), request.inputs, request.rows, request.matrix)
    assert len(labels) == rows
    values[-1][1] = None
    request = read_request(_body(values, list(NUMERIC), blanks=False), "application/json", loaded.signature, MAX)
    assert request.matrix is None
    with pytest.raises(AssertionError, match="own graph"):
        scoring.run_model(_refusing_graph(loaded), request.inputs, request.rows, request.matrix)


@pytest.mark.parametrize("rows", [1, 2_000])
def test_complete_rows_parsed_column_by_column_are_stacked_for_the_packed_graph(rows: int) -> None:
    """CSV through the stdlib's reader (a few rows) or pyarrow's (many, without the native reader) gives
    columns, not a matrix: run_model stacks them when none holds a missing value."""
    loaded = _load(_artifacts()[0])
    values = np.random.default_rng(rows).normal(size=(rows, 3)).round(6).tolist()
    with mock.patch.object(native_numbers, "LIBRARY", None):
        request = read_request(_csv(values), "text/csv", loaded.signature, MAX)
    assert request.matrix is None
    labels, _, _ = scoring.run_model(_refusing_graph(loaded), request.inputs, request.rows)
    assert len(labels) == rows


def test_the_native_csv_reader_hands_over_the_matrix_itself() -> None:
    loaded = _load(_artifacts()[0])
    values = np.random.default_rng(0).normal(size=(2_000, 3)).round(6)
    request = read_request(_csv(values.tolist()), "text/csv", loaded.signature, MAX)
    assert request.matrix is not None and np.array_equal(request.matrix, values.T)


def test_columns_out_of_the_signature_s_order_make_no_matrix() -> None:
    loaded = _load(_artifacts()[0])
    body = _body([[1.0, 2.0, 3.0]], list(reversed(NUMERIC)), blanks=False)
    assert read_request(body, "application/json", loaded.signature, MAX).matrix is None


def _other_input_graph() -> str:
    """A graph that runs but takes another input than the model's inputs packed."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["probabilities"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, None])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [3, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return base64.b64encode(model.SerializeToString()).decode()


@pytest.mark.parametrize("value, logged", [
    ("not base64 at all!", "does not load"),
    (base64.b64encode(b"\x08\x07garbage").decode(), "does not load"),
    (_other_input_graph(), "not the model's inputs packed"),
])
def test_a_packed_graph_that_cannot_serve_is_ignored_and_logged(
    value: str, logged: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.scoring"):
        loaded = _load(_with_key(_rewritten(), value))
    assert loaded.packed is None and loaded.run_packed is None
    assert logged in caplog.text
    status, answer, _ = score(ModelCache(lambda m, a: (1, "e"), lambda m, v: (_with_key(_rewritten(), value),
                                                                               loaded.sha256), 60),
                              "num", _body([[1.0, 2.0, 3.0]], list(NUMERIC), blanks=False), "application/json",
                              max_bytes=MAX)
    assert status == 200 and isinstance(answer, dict) and len(answer["predictions"]) == 1


def test_a_float32_model_never_takes_a_packed_graph() -> None:
    companion = _artifacts()[0]
    key = next(p.value for p in onnx.load_from_string(companion).metadata_props if p.key == PACKED_KEY)
    assert _load(_with_key(_rewritten("float classifier"), key)).packed is None
