"""Scoring core: request formats, errors, model loading, the session cache and score()."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest

from shared import names, paths, scoring, serving
from shared.errors import BadRequest, NotFound, PayloadTooLarge, StorageUnreachable, Unavailable, UnsupportedMediaType
from shared.memory_storage import MemoryStorage
from shared.scoring import (
    Feature,
    IntegrityError,
    LoadedModel,
    ModelArtifactError,
    ModelCache,
    Scored,
    Signature,
    load_model,
    parse_request,
    predict,
    score,
)
from shared.serving import Scorer
from shared.settings import Settings
from tests.unit import onnx_fixtures as fx

REPO = Path(__file__).resolve().parents[2]
MAX = 1_000_000
ROWS = [
    {"torque": 40.5, "speed": 1500, "type": "L"},
    {"torque": 61.0, "speed": 1410.5, "type": "H"},
    {"torque": 22, "speed": 1600, "type": "M"},
]
COLUMNS = ["torque", "speed", "type"]


def _load(data: bytes, name: str = "churn", version: int = 1) -> LoadedModel:
    return load_model(data, fx.sha256(data), name, version)


@pytest.fixture(scope="module")
def clf() -> LoadedModel:
    return _load(fx.classifier())


@pytest.fixture(scope="module")
def reg() -> LoadedModel:
    return _load(fx.regressor(), name="wear")


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _parse(model: LoadedModel, body: bytes, content_type: str | None = "application/json") -> dict[str, np.ndarray]:
    return parse_request(body, content_type, model.signature, MAX)


def _rows_in(order: list[str]) -> list[list[Any]]:
    return [[r[c] for c in order] for r in ROWS]


# --- request formats ------------------------------------------------------------------------------

SHUFFLED = ["type", "torque", "speed"]
FORMATS: dict[str, tuple[bytes, str | None]] = {
    "dataframe_split": (
        _json({"dataframe_split": {"columns": SHUFFLED, "data": _rows_in(SHUFFLED)}}), "application/json"
    ),
    "dataframe_split_with_index_and_params": (
        _json({
            "dataframe_split": {"index": [0, 1, 2], "columns": COLUMNS, "data": _rows_in(COLUMNS)},
            "params": {"x": 1},
        }),
        "application/json; charset=utf-8",
    ),
    "dataframe_records": (_json({"dataframe_records": ROWS}), "application/json"),
    "instances_records": (_json({"instances": ROWS}), "application/json"),
    "instances_rows_in_feature_order": (_json({"instances": _rows_in(COLUMNS)}), "application/json"),
    "inputs_columns": (_json({"inputs": {c: [r[c] for r in ROWS] for c in SHUFFLED}}), "application/json"),
    "azure_ml_input_data": (
        _json({"input_data": {"columns": SHUFFLED, "index": [5, 6, 7], "data": _rows_in(SHUFFLED)}}),
        "application/json",
    ),
    "plain_data_rows": (_json({"data": _rows_in(COLUMNS)}), None),
    "plain_data_records": (_json({"data": ROWS}), "application/json"),
    "csv_with_header": (
        ("type,torque,speed\r\n" + "".join(f"{r['type']},{r['torque']},{r['speed']}\r\n" for r in ROWS)).encode(),
        "text/csv",
    ),
}


@pytest.mark.parametrize("model_fixture", ["clf", "reg"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_request_format_gives_the_same_predictions(
    fmt: str, model_fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(model_fixture)
    reference = predict(model, _parse(model, *FORMATS["dataframe_records"]))
    body, content_type = FORMATS[fmt]
    assert predict(model, _parse(model, body, content_type)) == reference


def test_inputs_follow_the_declared_input_types(clf: LoadedModel, reg: LoadedModel) -> None:
    float_inputs = _parse(clf, FORMATS["dataframe_records"][0])
    double_inputs = _parse(reg, FORMATS["dataframe_records"][0])
    assert float_inputs["torque"].dtype == np.float32 and double_inputs["torque"].dtype == np.float64
    assert float_inputs["type"].dtype == object and float_inputs["type"].shape == (3, 1)
    assert double_inputs["speed"].shape == (3, 1)


def test_classifier_result_is_json_native_with_probabilities_per_class(clf: LoadedModel) -> None:
    result = predict(clf, _parse(clf, FORMATS["dataframe_records"][0]))
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert all(p in fx.CLASSES_STR for p in result["predictions"])
    assert [list(p) for p in result["probabilities"]] == [list(fx.CLASSES_STR)] * 3
    assert all(math.isclose(sum(p.values()), 1.0, rel_tol=1e-5) for p in result["probabilities"])
    assert result["model"] == {"name": "churn", "version": 1}


def test_integer_class_labels_stay_integers_and_probability_keys_are_strings() -> None:
    model = _load(fx.classifier("double", int_labels=True))
    result = predict(model, _parse(model, FORMATS["dataframe_records"][0]))
    assert set(result["predictions"]) <= {0, 1}
    assert all(type(p) is int for p in result["predictions"])
    assert list(result["probabilities"][0]) == ["0", "1"]


def test_regression_returns_one_float_per_row(reg: LoadedModel) -> None:
    result = predict(reg, _parse(reg, FORMATS["dataframe_records"][0]))
    assert "probabilities" not in result
    assert len(result["predictions"]) == 3 and all(type(p) is float for p in result["predictions"])


def test_null_numeric_becomes_nan_and_the_model_imputes_it(clf: LoadedModel) -> None:
    inputs = _parse(clf, _json({"dataframe_records": [{"torque": None, "speed": 1500, "type": "L"}]}))
    assert np.isnan(inputs["torque"][0, 0])
    result = predict(clf, inputs)
    assert result["predictions"][0] in fx.CLASSES_STR
    assert not any(math.isnan(p) for p in result["probabilities"][0].values())


def test_nan_output_becomes_null_rather_than_invalid_json(reg: LoadedModel) -> None:
    # The double fixture has no numeric imputer, so a null input yields a NaN prediction.
    result = predict(reg, _parse(reg, _json({"instances": [[None, 1500, "L"]]})))
    assert result["predictions"] == [None]


def test_nan_outputs_of_a_large_batch_become_null_too(reg: LoadedModel) -> None:
    rows = [[40.0, 1500.0, "L"]] * 100
    rows[57] = [None, 1500.0, "L"]
    predictions = predict(reg, _parse(reg, _json({"data": rows})))["predictions"]
    assert predictions[57] is None and all(type(p) is float for i, p in enumerate(predictions) if i != 57)


def test_null_categorical_becomes_the_signature_missing_marker(clf: LoadedModel) -> None:
    inputs = _parse(clf, _json({"instances": [{"torque": 1.0, "speed": 2.0, "type": None}]}))
    assert inputs["type"][0, 0] == fx.MISSING


def test_a_key_missing_from_some_records_is_a_null_there(clf: LoadedModel) -> None:
    records = [ROWS[0], {"speed": 1500, "type": "L"}]
    inputs = _parse(clf, _json({"dataframe_records": records}))
    assert inputs["torque"][0, 0] == 40.5 and np.isnan(inputs["torque"][1, 0])


def _with_optional(data: bytes, optional: set[str]) -> bytes:
    """The fixture model's ONNX with these features marked optional in its signature metadata."""
    model = onnx.load_from_string(data)
    prop = next(p for p in model.metadata_props if p.key == "mlops.signature")
    signature = json.loads(prop.value)
    signature["features"] = [{**f, "optional": True} if f["name"] in optional else f for f in signature["features"]]
    prop.value = json.dumps(signature)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def clf_optional() -> LoadedModel:
    return _load(_with_optional(fx.classifier(), {"torque", "type"}))


def test_the_optional_flag_is_read_from_the_signature_and_defaults_to_mandatory(clf: LoadedModel,
                                                                                clf_optional: LoadedModel) -> None:
    assert [f.optional for f in clf.signature.features] == [False, False, False]
    assert {f.name: f.optional for f in clf_optional.signature.features} == {
        "torque": True, "speed": False, "type": True}


@pytest.mark.parametrize(("absent", "nulls", "content_type"), [
    (_json({"dataframe_records": [{"speed": 1500}, {"speed": 1410.5}]}),
     _json({"dataframe_records": [{"torque": None, "speed": 1500, "type": None},
                                  {"torque": None, "speed": 1410.5, "type": None}]}), "application/json"),
    (_json({"dataframe_split": {"columns": ["speed"], "data": [[1500], [1410.5]]}}),
     _json({"data": [[None, 1500, None], [None, 1410.5, None]]}), "application/json"),
    (_json({"inputs": {"speed": [1500, 1410.5]}}),
     _json({"inputs": {"torque": [None, None], "speed": [1500, 1410.5], "type": [None, None]}}), "application/json"),
    (b"speed\n1500\n1410.5\n", b"torque,speed,type\n,1500,\n,1410.5,\n", "text/csv"),
], ids=["dataframe_records", "dataframe_split", "inputs_columns", "csv"])
def test_an_absent_optional_column_scores_as_if_its_values_were_sent_as_nulls(
    clf_optional: LoadedModel, absent: bytes, nulls: bytes, content_type: str
) -> None:
    left_out = _parse(clf_optional, absent, content_type)
    assert np.isnan(left_out["torque"]).all() and left_out["torque"].dtype == np.float32
    assert left_out["type"].ravel().tolist() == [fx.MISSING, fx.MISSING]
    sent = _parse(clf_optional, nulls, content_type)
    assert predict(clf_optional, left_out) == predict(clf_optional, sent)


def test_an_absent_mandatory_column_is_still_refused_next_to_optional_ones(clf: LoadedModel,
                                                                        clf_optional: LoadedModel) -> None:
    body = _json({"dataframe_records": [{"torque": 1.0, "type": "L"}]})
    for model in (clf_optional, clf):
        with pytest.raises(BadRequest, match=re.escape("missing columns ['speed']")) as caught:
            _parse(model, body)
        assert caught.value.status == 400
    with pytest.raises(BadRequest, match=re.escape("missing columns ['torque', 'type']")):
        _parse(clf, _json({"dataframe_records": [{"speed": 1.0}]}))  # not optional there: a 400 as before


def test_numbers_in_a_categorical_column_become_strings(clf: LoadedModel) -> None:
    inputs = _parse(clf, _json({"data": [[1.0, 2.0, 7], [1.0, 2.0, 2.5]]}))
    assert inputs["type"].ravel().tolist() == ["7", "2.5"]


def test_an_unknown_category_is_scored_not_refused(clf: LoadedModel) -> None:
    result = predict(clf, _parse(clf, _json({"data": [[40.0, 1500.0, "never-seen"]]})))
    assert result["predictions"][0] in fx.CLASSES_STR


def test_csv_empty_cells_are_nulls_and_blank_lines_are_skipped(clf: LoadedModel) -> None:
    body = b"\xef\xbb\xbftorque,speed,type\n,1500,\n\n41.5,1400,L\n"  # with a UTF-8 BOM, as Excel writes
    inputs = _parse(clf, body, "text/csv; charset=utf-8")
    assert np.isnan(inputs["torque"][0, 0]) and inputs["torque"][1, 0] == 41.5
    assert inputs["type"].ravel().tolist() == [fx.MISSING, "L"]


def test_single_feature_records_and_int64_inputs_are_supported() -> None:
    signature = Signature(
        name="t", task="regression", target="y", features=(Feature("count", "numeric", np.dtype(np.int64)),),
        classes=(), categorical_missing="missing", outputs=("variable",),
    )
    inputs = parse_request(_json({"dataframe_records": [{"count": 3}, {"count": 4.0}]}), None, signature, MAX)
    assert inputs["count"].dtype == np.int64 and inputs["count"].ravel().tolist() == [3, 4]
    csv_inputs = parse_request(b"count\n5\n", "text/csv", signature, MAX)
    assert csv_inputs["count"].ravel().tolist() == [5]


# --- request errors -----------------------------------------------------------------------------

ERRORS: list[tuple[str, bytes, str | None, type[Exception], int, str]] = [
    ("too_large", b"x" * 101, "application/json", PayloadTooLarge, 413, "101 bytes (max_bytes=100)"),
    ("xml", b"<a/>", "application/xml", UnsupportedMediaType, 415, "content_type=application/xml"),
    ("bad_charset", b"a\n1\n", "text/csv; charset=klingon", UnsupportedMediaType, 415, "charset=klingon"),
    ("malformed_json", b'{"data": [', "application/json", BadRequest, 400, "not valid JSON"),
    ("not_utf8", b'{"data": "\xff"}', "application/json", BadRequest, 400, "utf-8"),
    ("not_an_object", b"[1, 2]", "application/json", BadRequest, 400, "must be a JSON object"),
    ("no_input_key", _json({"rows": []}), "application/json", BadRequest, 400, "found keys ['rows']"),
    ("two_input_keys", _json({"instances": ROWS, "inputs": ROWS}), "application/json", BadRequest, 400,
     "exactly one of ['dataframe_split', 'dataframe_records', 'instances', 'inputs', 'input_data', 'data']"),
    ("missing_column", _json({"dataframe_split": {"columns": ["torque", "type"], "data": [[1.0, "L"]]}}),
     "application/json", BadRequest, 400, "missing columns ['speed']"),
    ("unknown_column", _json({"dataframe_records": [{**ROWS[0], "colour": "red"}]}), "application/json",
     BadRequest, 400, "unknown columns ['colour']"),
    ("duplicate_column", _json({"dataframe_split": {"columns": ["torque", "torque", "type"], "data": [[1, 2, "L"]]}}),
     "application/json", BadRequest, 400, "duplicate columns ['torque']"),
    ("string_for_number", _json({"data": [[1.0, 2.0, "L"], [1.0, 2.0, "L"], [1.0, 2.0, "L"], ["abc", 2.0, "L"]]}),
     "application/json", BadRequest, 400, "column 'torque' row 3: expected a number, got 'abc'"),
    ("bool_for_number", _json({"dataframe_records": [{**ROWS[0], "speed": True}]}), "application/json",
     BadRequest, 400, "column 'speed' row 0: expected a number, got True"),
    ("object_for_category", _json({"data": [[1.0, 2.0, {"a": 1}]]}), "application/json", BadRequest, 400,
     "column 'type' row 0: expected a string, got {'a': 1}"),
    ("short_row", _json({"data": [[1.0, 2.0, "L"], [1.0, 2.0]]}), "application/json", BadRequest, 400,
     "data row 1 has 2 values; expected 3"),
    ("scalar_row", _json({"instances": [[1.0, 2.0, "L"], 5]}), "application/json", BadRequest, 400,
     "instances row 1: expected a list of 3 values, got 5"),
    ("empty_list", _json({"instances": []}), "application/json", BadRequest, 400, "no rows"),
    ("empty_split", _json({"dataframe_split": {"columns": COLUMNS, "data": []}}), "application/json",
     BadRequest, 400, "no rows"),
    ("csv_header_only", b"torque,speed,type\n", "text/csv", BadRequest, 400, "no rows"),
    ("csv_empty", b"", "text/csv", BadRequest, 400, "header row"),
    ("csv_bad_number", b"torque,speed,type\n1,2,L\n1,fast,L\n", "text/csv", BadRequest, 400,
     "column 'speed' row 1: expected a number, got 'fast'"),
    ("csv_ragged", b"torque,speed,type\n1,2\n", "text/csv", BadRequest, 400, "CSV row 0 has 2 values"),
    ("split_without_data", _json({"dataframe_split": {"columns": COLUMNS}}), "application/json", BadRequest, 400,
     "'dataframe_split' must be an object with 'data'"),
    ("records_not_a_list", _json({"dataframe_records": {"torque": 1}}), "application/json", BadRequest, 400,
     "'dataframe_records' must be a list"),
    ("ragged_columns", _json({"inputs": {"torque": [1, 2], "speed": [1], "type": ["L", "M"]}}),
     "application/json", BadRequest, 400, "list of equal length"),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "error", "status", "message"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_a_bad_request_raises_a_typed_error_that_says_what_is_wrong(
    clf: LoadedModel, case: str, body: bytes, content_type: str | None,
    error: type[Exception], status: int, message: str,
) -> None:
    with pytest.raises(error) as info:
        parse_request(body, content_type, clf.signature, 100 if case == "too_large" else MAX)
    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    assert message.lower() in info.value.message.lower()  # type: ignore[attr-defined]


def test_null_in_an_integer_input_is_refused() -> None:
    signature = Signature(
        name="t", task="regression", target="y", features=(Feature("count", "numeric", np.dtype(np.int64)),),
        classes=(), categorical_missing="missing", outputs=("variable",),
    )
    with pytest.raises(BadRequest, match="column 'count' row 1: expected an integer, got None"):
        parse_request(_json({"data": [[1], [None]]}), None, signature, MAX)


# --- one value rule for JSON and CSV ---------------------------------------------------------------

COUNT = Signature(
    name="t", task="regression", target="y", features=(Feature("count", "numeric", np.dtype(np.int64)),),
    classes=(), categorical_missing="missing", outputs=("variable",),
)


def _json_cell(cell: str) -> bytes:
    """The clf row set with `cell` as torque of row 1, spelled as raw JSON text."""
    return ('{"dataframe_split": {"columns": ["torque", "speed", "type"], '
            f'"data": [[1.0, 2.0, "L"], [{cell}, 2.0, "L"]]}}}}').encode()


def _csv_cell(cell: str) -> bytes:
    return f"torque,speed,type\n1.0,2.0,L\n{cell},2.0,L\n".encode()


# (case, raw JSON cell, CSV cell, what the message says after "column 'torque' row 1: ")
SAME_VALUE_ERRORS: list[tuple[str, str, str, str]] = [
    ("infinity", "Infinity", "inf", "expected a finite number that fits float32, got "),
    ("minus_infinity", "-Infinity", "-Infinity", "expected a finite number that fits float32, got "),
    ("overflowing_literal", "1e999", "1e999", "expected a finite number that fits float32, got "),
    ("nan", "NaN", "nan", "expected a finite number that fits float32, got "),
    ("nan_in_capitals", "NaN", "NaN", "expected a finite number that fits float32, got "),
    ("beyond_float32", "1e300", "1e300", "expected a finite number that fits float32, got "),
    ("integer_beyond_float64", "1" + "0" * 400, "1" + "0" * 400, "expected a finite number that fits float32, got "),
    ("arabic_indic_digit", '"٣"', "٣", "expected a number, got '٣'"),
    ("digits_with_underscore", '"1_0"', "1_0", "expected a number, got '1_0'"),
    ("word", '"fast"', "fast", "expected a number, got 'fast'"),
]


@pytest.mark.parametrize(("case", "json_cell", "csv_cell", "says"), SAME_VALUE_ERRORS,
                         ids=[c[0] for c in SAME_VALUE_ERRORS])
def test_json_and_csv_refuse_the_same_values_with_the_same_message(
    clf: LoadedModel, case: str, json_cell: str, csv_cell: str, says: str
) -> None:
    messages = []
    for body, content_type in ((_json_cell(json_cell), "application/json"), (_csv_cell(csv_cell), "text/csv")):
        with pytest.raises(BadRequest) as info:
            parse_request(body, content_type, clf.signature, MAX)
        assert (type(info.value), info.value.status, info.value.code) == (BadRequest, 400, "BAD_REQUEST")
        assert f"column 'torque' row 1: {says}" in info.value.message, (content_type, info.value.message)
        messages.append(info.value.message)
    if "finite" in says:
        assert all("send null (JSON) or an empty cell (CSV) for a missing value" in m for m in messages)


def test_csv_non_finite_values_are_no_longer_scored_as_null(cache: ModelCache) -> None:
    for cell in ("inf", "-inf", "1e999", "nan", "Infinity"):
        status, body, _ = score(cache, "churn", _csv_cell(cell), "text/csv", max_bytes=MAX)
        assert (status, body["error_code"]) == (400, "BAD_REQUEST"), (cell, body)
        assert "column 'torque' row 1: expected a finite number" in body["message"]


def test_a_double_input_takes_what_a_float_input_refuses_as_too_big(reg: LoadedModel) -> None:
    for body, content_type in ((_json_cell("1e300"), "application/json"), (_csv_cell("1e300"), "text/csv")):
        assert _parse(reg, body, content_type)["torque"][1, 0] == 1e300


def test_a_missing_value_is_json_null_or_an_empty_csv_cell_and_both_score_alike(clf: LoadedModel) -> None:
    from_json = _parse(clf, b'{"data": [[1.0, 2.0, "L"], [null, 2.0, null]]}')
    from_csv = _parse(clf, b"torque,speed,type\n1.0,2.0,L\n,2.0,\n", "text/csv")
    for inputs in (from_json, from_csv):
        assert np.isnan(inputs["torque"][1, 0]) and inputs["type"][1, 0] == fx.MISSING
    assert predict(clf, from_json) == predict(clf, from_csv)


def test_csv_numbers_read_as_pandas_reads_them(clf: LoadedModel) -> None:
    inputs = _parse(clf, b"torque,speed,type\n +1.5 ,.5,L\n1.,2e3,M\n", "text/csv")
    assert inputs["torque"].ravel().tolist() == [1.5, 1.0] and inputs["speed"].ravel().tolist() == [0.5, 2000.0]


def test_csv_text_is_kept_as_is_in_a_categorical_column(clf: LoadedModel) -> None:
    inputs = _parse(clf, b"torque,speed,type\n1,2,nan\n1,2,inf\n", "text/csv")
    assert inputs["type"].ravel().tolist() == ["nan", "inf"]


def test_non_finite_json_in_a_categorical_column_is_refused(clf: LoadedModel) -> None:
    with pytest.raises(BadRequest, match=r"column 'type' row 0: expected a string, got NaN; .*send null"):
        _parse(clf, b'{"data": [[1.0, 2.0, NaN]]}')


# (case, JSON cell, CSV cell, expected value or the message after "column 'count' row 0: ")
INTEGER_CELLS: list[tuple[str, str, str, int | str]] = [
    ("whole_float", "4.0", "4.0", 4),
    ("exponent", "4e2", "4e2", 400),
    ("fraction", "4.5", "4.5", "expected an integer, got "),
    ("infinity", "Infinity", "inf", "expected an integer, got "),
    ("nan", "NaN", "nan", "expected an integer, got "),
    ("null_or_empty", "null", '""', "expected an integer, got "),  # a bare empty line is a blank line in CSV
    ("beyond_int64", "1e20", "1e20", "does not fit in int64"),
    ("long_digits", "9" * 30, "9" * 30, "does not fit in int64"),
    ("arabic_indic_digit", '"٣"', "٣", "expected an integer, got '٣'"),
]


@pytest.mark.parametrize(("case", "json_cell", "csv_cell", "expected"), INTEGER_CELLS,
                         ids=[c[0] for c in INTEGER_CELLS])
def test_integer_inputs_follow_one_rule_in_json_and_csv(case: str, json_cell: str, csv_cell: str,
                                                        expected: int | str) -> None:
    json_body, csv_body = f'{{"data": [[{json_cell}]]}}'.encode(), f"count\n{csv_cell}\n".encode()
    for body, content_type in ((json_body, "application/json"), (csv_body, "text/csv")):
        if isinstance(expected, int):
            assert parse_request(body, content_type, COUNT, MAX)["count"].ravel().tolist() == [expected]
            continue
        with pytest.raises(BadRequest) as info:
            parse_request(body, content_type, COUNT, MAX)
        assert info.value.status == 400 and "column 'count' row 0: " in info.value.message, content_type
        assert expected in info.value.message, (content_type, info.value.message)


# --- content types, as MLflow's scoring server ------------------------------------------------------

ACCEPTED_CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8",
    "application/json;charset=Utf-8", "Application/JSON", "application/json; Charset=utf-8",
    'application/json; charset="utf-8"', "application/json;", "application/vnd.api+json", None, "",
]


@pytest.mark.parametrize("content_type", ACCEPTED_CONTENT_TYPES)
def test_json_content_types_mlflow_accepts_and_rfc_spellings_are_accepted(
    clf: LoadedModel, content_type: str | None
) -> None:
    assert _parse(clf, FORMATS["dataframe_records"][0], content_type)["torque"].shape == (3, 1)


# (case, content type, what the 415 message names)
REFUSED_CONTENT_TYPES = [
    ("charset_utf8_without_dash", "application/json; charset=utf8", "charset=utf8"),
    ("charset_latin1", "application/json; charset=latin-1", "charset=latin-1"),
    ("csv_charset_utf16", "text/csv; charset=utf-16", "charset=utf-16"),
    ("csv_bom_charset", "text/csv; charset=utf-8-sig", "charset=utf-8-sig"),
    ("empty_charset", "application/json; charset=", "charset="),
    ("mlflow_1_format_parameter", "application/json; format=pandas-split", "parameter (format)"),
    ("csv_header_parameter", "text/csv; header=present", "parameter (header)"),
    ("unknown_after_charset", "application/json; charset=utf-8; foo=bar", "parameter (foo)"),
    ("parameter_without_value", "application/json; boundary", "parameter (boundary)"),
    ("xml", "application/xml", "content_type=application/xml"),
    ("plain_text", "text/plain; charset=utf-8", "content_type=text/plain"),
    ("parameters_only", "; charset=utf-8", "content_type=; charset=utf-8"),
]


@pytest.mark.parametrize(("case", "content_type", "names"), REFUSED_CONTENT_TYPES,
                         ids=[c[0] for c in REFUSED_CONTENT_TYPES])
def test_content_types_mlflow_refuses_are_a_415_naming_the_problem(
    clf: LoadedModel, case: str, content_type: str, names: str
) -> None:
    body = FORMATS["csv_with_header"][0] if content_type.startswith("text/csv") else FORMATS["dataframe_records"][0]
    with pytest.raises(UnsupportedMediaType) as info:
        parse_request(body, content_type, clf.signature, MAX)
    assert (info.value.status, info.value.code) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert names in info.value.message


# --- top-level keys, as MLflow --------------------------------------------------------------------


def test_unknown_top_level_keys_next_to_one_format_key_are_ignored(clf: LoadedModel) -> None:
    reference = predict(clf, _parse(clf, FORMATS["dataframe_records"][0]))
    split = {"columns": COLUMNS, "data": _rows_in(COLUMNS)}
    for doc in ({"dataframe_split": split, "foo": 1}, {"dataframe_records": ROWS, "params": {"a": 1}, "x": [None]},
                {"instances": ROWS, "signature": {"inputs": "whatever"}}):
        assert predict(clf, _parse(clf, _json(doc))) == reference, doc


@pytest.mark.parametrize(("doc", "says"), [
    ({}, "found an empty object"),
    ({"foo": 1, "params": {}}, "found keys ['foo', 'params']"),
    ({"dataframe_split": {"data": [[1, 2, "L"]]}, "dataframe_records": ROWS}, "found 2: ['dataframe_split', "),
    ({"data": [[1, 2, "L"]], "inputs": [[1, 2, "L"]], "instances": ROWS}, "found 3: "),
], ids=["empty", "no_format_key", "two_format_keys", "three_format_keys"])
def test_zero_or_several_format_keys_are_a_400(clf: LoadedModel, doc: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequest) as info:
        _parse(clf, _json(doc))
    assert info.value.status == 400 and "request must contain exactly one of" in info.value.message
    assert says in info.value.message


# --- messages say what is wrong and leak nothing ------------------------------------------------

LEAKS = ("Traceback", 'File "', "/work/", "/home/", "/usr/", "site-packages", "http://", "https://",
         "devstoreaccount", "core.windows.net", "ONNXRuntimeError", "onnxruntime_src")


def assert_clean(message: str) -> None:
    """No traceback, local path or storage endpoint in a message a client reads."""
    assert message and not [leak for leak in LEAKS if leak in message], message


DEEP = "[" * 900 + "]" * 900
# (case, body, content type, status, error code, what the message says)
HYGIENE: list[tuple[str, bytes, str | None, int, str, str]] = [
    ("csv_not_utf8", b"torque,speed,type\n\xff,2,L\n", "text/csv", 400, "BAD_REQUEST",
     "request body is not valid UTF-8: 'utf-8' codec can't decode byte 0xff in position 18"),
    ("json_not_utf8", b'{"data": [[1, 2, "\xff"]]}', "application/json", 400, "BAD_REQUEST",
     "request body is not valid UTF-8: 'utf-8' codec can't decode byte 0xff"),
    ("json_utf16", '{"data": [[1, 2, "L"]]}'.encode("utf-16"), "application/json", 400, "BAD_REQUEST",
     "not valid UTF-8"),
    ("json_lone_surrogate", b'{"data": [[1, 2, "\\ud800"]]}', "application/json", 400, "BAD_REQUEST",
     "not valid JSON"),
    ("json_lone_surrogate_next_to_nan", b'{"data": [[NaN, 2, "\\ud800"]]}', "application/json", 400, "BAD_REQUEST",
     "lone surrogate"),
    ("json_nan_and_a_syntax_error", b'{"data": [[NaN, 2, "L"]]', "application/json", 400, "BAD_REQUEST",
     "not valid JSON"),
    ("deeply_nested_cell", f'{{"data": [[1, 2, {DEEP}]]}}'.encode(), "application/json", 400, "BAD_REQUEST",
     "column 'type' row 0: expected a string, got [[[[[[[...]]]]]]]"),
    ("too_deep_for_the_parser", ("[" * 5000 + "]" * 5000).encode(), "application/json", 400, "BAD_REQUEST",
     "not valid JSON"),
    ("csv_field_over_the_limit", b"torque,speed,type\n1,2," + b"x" * 200_000 + b"\n", "text/csv", 400,
     "BAD_REQUEST", "CSV body cannot be read at line 2: field larger than field limit"),
    ("huge_header", ("," * 200_000 + "\n").encode(), "text/csv", 400, "BAD_REQUEST", "duplicate columns ['']"),
    ("many_unknown_columns", (",".join(f"c{i}" for i in range(50_000)) + "\n" + ",".join("1" * 50_000) + "\n").encode(),
     "text/csv", 400, "BAD_REQUEST", "unknown columns ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', ...]"),
]


@pytest.mark.parametrize(("case", "body", "content_type", "status", "code", "says"), HYGIENE,
                         ids=[h[0] for h in HYGIENE])
def test_undecodable_and_pathological_bodies_get_a_clear_4xx(
    cache: ModelCache, case: str, body: bytes, content_type: str | None, status: int, code: str, says: str
) -> None:
    got_status, got, _ = score(cache, "churn", body, content_type, max_bytes=MAX)
    assert (got_status, got["error_code"]) == (status, code), got
    assert says in got["message"]
    assert len(got["message"]) < 1000
    assert_clean(got["message"])


def test_csv_with_old_mac_line_ends_is_read(clf: LoadedModel) -> None:
    inputs = _parse(clf, b"torque,speed,type\r1,2,L\r3,4,M\r", "text/csv")
    assert inputs["torque"].ravel().tolist() == [1.0, 3.0]


def test_a_non_finite_json_body_is_read_the_same_without_orjson(
    clf: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.scoring as scoring

    monkeypatch.setattr(scoring, "_fast_loads", None)  # deployments without orjson use the stdlib parser
    assert _parse(clf, FORMATS["dataframe_records"][0])["torque"].shape == (3, 1)
    for cell in ("NaN", "Infinity", "1e999"):
        with pytest.raises(BadRequest, match="column 'torque' row 1: expected a finite number"):
            _parse(clf, _json_cell(cell))
    with pytest.raises(BadRequest, match="lone surrogate"):
        _parse(clf, b'{"data": [[1, 2, "\\ud800"]]}')


# --- loading ------------------------------------------------------------------------------------


def test_an_artifact_whose_sha256_does_not_match_is_refused() -> None:
    data = fx.classifier()
    with pytest.raises(IntegrityError) as info:
        load_model(data, "0" * 64, "churn", 3)
    assert info.value.status == 500 and info.value.code == "MODEL_INTEGRITY_ERROR"
    assert "(name=churn, version=3)" in info.value.message and f"sha256={fx.sha256(data)}" in info.value.message


def test_a_model_without_the_signature_metadata_is_refused() -> None:
    model = onnx.load_from_string(fx.classifier())
    del model.metadata_props[:]
    data = model.SerializeToString()
    with pytest.raises(ModelArtifactError, match="no mlops.signature metadata"):
        load_model(data, fx.sha256(data), "churn", 1)


def test_bytes_that_are_not_onnx_are_refused_as_an_artifact_error() -> None:
    with pytest.raises(ModelArtifactError, match=r"\(name=churn, version=1\) cannot be loaded"):
        load_model(b"not onnx", fx.sha256(b"not onnx"), "churn", 1)


def test_sessions_run_single_threaded_and_sequential(clf: LoadedModel) -> None:
    options = clf.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


# --- the cache ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRegistry:
    """Aliases and artifacts in memory, counting every call the cache makes."""

    def __init__(self) -> None:
        self.artifacts: dict[tuple[str, int], tuple[bytes, str]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.resolves = 0
        self.fetches: list[tuple[str, int]] = []
        self.before_fetch: Callable[[str, int], None] = lambda model, version: None

    def add(self, model: str, version: int, data: bytes, sha256: str | None = None) -> None:
        self.artifacts[(model, version)] = (data, sha256 or fx.sha256(data))

    def resolve(self, model: str, alias: str) -> tuple[int, str]:
        self.resolves += 1
        if not any(m == model for m, _ in self.artifacts):
            raise NotFound(f"model (name={model}) not found")
        if (model, alias) not in self.aliases:
            raise Unavailable(f"model (name={model}) has no {alias}")
        version = self.aliases[(model, alias)]
        return version, f'"etag-{version}"'

    def fetch(self, model: str, version: int) -> tuple[bytes, str]:
        self.fetches.append((model, version))
        self.before_fetch(model, version)
        if (model, version) not in self.artifacts:
            raise NotFound(f"model version (name={model}, version={version}) not found")
        return self.artifacts[(model, version)]


@pytest.fixture()
def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.add("churn", 1, fx.classifier(seed=0))
    reg.add("churn", 2, fx.classifier(seed=1))
    reg.aliases[("churn", "champion")] = 1
    return reg


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def _at_once(job: Callable[[], None]) -> None:
    job()  # the recheck a request starts runs before get() returns: each test sees it land, deterministically


@pytest.fixture()
def cache(registry: FakeRegistry, clock: FakeClock) -> ModelCache:
    return ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock, refresh=_at_once)


def test_the_alias_is_resolved_again_only_after_recheck_seconds(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    first = cache.get("churn")
    for _ in range(100):
        assert cache.get("churn") is first
    clock.now += 29.9
    cache.get("churn")
    assert registry.resolves == 1 and registry.fetches == [("churn", 1)]
    clock.now += 0.1
    assert cache.get("churn") is first
    assert registry.resolves == 2 and registry.fetches == [("churn", 1)]


def test_a_new_champion_is_swapped_in_at_the_next_recheck(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    assert cache.get("churn").version == 1
    registry.aliases[("churn", "champion")] = 2
    assert cache.get("churn").version == 1
    clock.now += 30
    assert cache.get("churn").version == 1  # the request that starts the recheck is served by the last good model
    assert cache.get("churn").version == 2
    assert registry.fetches == [("churn", 1), ("churn", 2)]


def test_a_request_in_flight_keeps_the_model_it_started_with(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    in_flight = cache.get("churn")
    registry.aliases[("churn", "champion")] = 2
    clock.now += 30
    cache.get("churn")  # starts the recheck that swaps version 2 in
    assert cache.get("churn").version == 2
    assert in_flight.version == 1
    assert predict(in_flight, _parse(in_flight, FORMATS["dataframe_records"][0]))["model"]["version"] == 1


def test_a_tampered_new_version_is_logged_and_the_last_good_one_keeps_serving(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert cache.get("churn").version == 1
    registry.add("churn", 2, fx.classifier(seed=1), sha256="f" * 64)
    registry.aliases[("churn", "champion")] = 2
    clock.now += 30
    with caplog.at_level("ERROR", logger="shared.scoring"):
        assert cache.get("churn").version == 1
    assert any("sha256" in r.getMessage() for r in caplog.records)
    for _ in range(50):
        assert cache.get("churn").version == 1
    assert registry.fetches == [("churn", 1), ("churn", 2)]  # no retry per request
    registry.add("churn", 2, fx.classifier(seed=1))  # fixed upstream
    clock.now += 30
    assert cache.get("churn").version == 1  # starts the recheck, which loads the fixed version
    assert cache.get("churn").version == 2
    assert registry.fetches == [("churn", 1), ("churn", 2), ("churn", 2)]


def test_a_tampered_pinned_version_is_refused_and_not_refetched_until_recheck(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    registry.add("churn", 2, fx.classifier(seed=1), sha256="f" * 64)
    for _ in range(3):
        with pytest.raises(IntegrityError):
            cache.get("churn", version=2)
    assert registry.fetches == [("churn", 2)]
    clock.now += 30
    with pytest.raises(IntegrityError):
        cache.get("churn", version=2)
    assert len(registry.fetches) == 2


def test_pinned_versions_are_cached_per_version(cache: ModelCache, registry: FakeRegistry) -> None:
    assert cache.get("churn", version=2).version == 2
    assert cache.get("churn", version=2) is cache.get("churn", version=2)
    assert cache.get("churn").version == 1
    assert registry.fetches == [("churn", 2), ("churn", 1)]


def test_is_warm_says_whether_get_would_answer_from_memory(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    """What an async caller asks before scoring on its event loop: get() will not read storage or load a session."""
    assert not cache.is_warm("churn") and not cache.is_warm("churn", version=2)
    cache.get("churn")
    assert cache.is_warm("churn") and cache.is_warm("churn", alias="champion")
    assert not cache.is_warm("churn", alias="challenger") and not cache.is_warm("churn", version=2)
    cache.get("churn", version=2)
    assert cache.is_warm("churn", version=2)
    clock.now += 30  # due for a recheck: get() starts it in the background and answers at once
    assert cache.is_warm("churn")
    clock.now += 30  # idle for two intervals: get() rechecks before answering
    assert not cache.is_warm("churn")
    resolves = registry.resolves
    cache.get("churn")
    assert registry.resolves == resolves + 1 and cache.is_warm("churn")


def test_unknown_model_and_missing_champion_raise_their_errors(cache: ModelCache, registry: FakeRegistry) -> None:
    with pytest.raises(NotFound):
        cache.get("nope")
    with pytest.raises(Unavailable):
        cache.get("churn", alias="challenger")


def test_unknown_model_names_leave_nothing_behind(cache: ModelCache) -> None:
    for i in range(50):
        with pytest.raises(NotFound):
            cache.get(f"nope-{i}")
        with pytest.raises(NotFound):
            cache.get("churn", version=100 + i)
    assert cache._locks.keys() <= {("alias", "churn", "champion")}


def test_an_alias_removed_from_the_registry_stops_being_served(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    cache.get("churn")
    del registry.aliases[("churn", "champion")]
    clock.now += 30
    assert cache.get("churn").version == 1  # starts the recheck, which finds the alias gone
    with pytest.raises(Unavailable):
        cache.get("churn")


def test_an_unreachable_registry_keeps_the_last_good_model(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    cache.get("churn")

    def down(model: str, alias: str) -> tuple[int, str]:
        raise ConnectionError("registry down")

    cache._resolve = down  # type: ignore[method-assign]
    clock.now += 30
    assert cache.get("churn").version == 1


def test_readers_do_not_wait_while_another_thread_loads_the_new_champion(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    cache.get("churn")
    release, entered = threading.Event(), threading.Event()

    def slow(model: str, version: int) -> None:
        if version == 2:
            entered.set()
            assert release.wait(10)

    registry.before_fetch = slow
    registry.aliases[("churn", "champion")] = 2
    clock.now += 30
    loader = threading.Thread(target=cache.get, args=("churn",))
    loader.start()
    assert entered.wait(10)
    assert cache.get("churn").version == 1  # would deadlock if readers waited on the loader
    assert cache.get("churn", version=1).version == 1
    release.set()
    loader.join(10)
    assert cache.get("churn").version == 2


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def test_after_an_idle_spell_the_first_request_is_answered_by_the_current_champion(
    cache: ModelCache, registry: FakeRegistry, clock: FakeClock
) -> None:
    assert cache.get("churn").version == 1
    registry.aliases[("churn", "champion")] = 2
    clock.now += 60  # two intervals without a request: the alias is rechecked before this one is answered
    assert cache.get("churn").version == 2
    assert registry.resolves == 2


def test_a_recheck_that_cannot_start_leaves_the_last_good_model_answering(
    registry: FakeRegistry, clock: FakeClock
) -> None:
    def no_thread(job: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    cache = ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock, refresh=no_thread)
    assert cache.get("churn").version == 1
    registry.aliases[("churn", "champion")] = 2
    clock.now += 30
    assert [cache.get("churn").version for _ in range(3)] == [1, 1, 1]  # each tries again, none fails
    clock.now += 30  # idle for two intervals: this request rechecks itself, so the lock was given back
    assert cache.get("churn").version == 2


def test_no_request_waits_for_a_hung_registry_once_a_model_serves_the_alias(
    registry: FakeRegistry, clock: FakeClock
) -> None:
    cache = ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock)  # rechecks on a thread
    assert cache.get("churn").version == 1
    entered, release = threading.Event(), threading.Event()
    answer = registry.resolve

    def hung(model: str, alias: str) -> tuple[int, str]:
        entered.set()
        assert release.wait(10)
        return answer(model, alias)

    cache._resolve = hung  # type: ignore[method-assign]
    registry.aliases[("churn", "champion")] = 2
    clock.now += 30
    try:
        assert cache.get("churn").version == 1  # starts the recheck and returns without waiting for it
        assert entered.wait(10)
        for _ in range(20):  # while it hangs, every request is served by the last good model; one recheck runs
            assert cache.get("churn").version == 1
    finally:
        release.set()
    _until(lambda: cache.get("churn").version == 2)
    assert registry.resolves == 2 and registry.fetches == [("churn", 1), ("churn", 2)]


def test_concurrent_gets_during_swaps_never_fail(cache: ModelCache, registry: FakeRegistry, clock: FakeClock) -> None:
    errors: list[BaseException] = []
    served: list[int] = []
    stop = threading.Event()
    inputs = _parse(cache.get("churn"), FORMATS["dataframe_records"][0])

    def reader() -> None:
        try:
            while not stop.is_set():
                model = cache.get("churn")
                served.append(predict(model, inputs)["model"]["version"])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            want = 2 - i % 2
            registry.aliases[("churn", "champion")] = want
            clock.now += 30
            _until(lambda want=want: cache.get("churn").version == want)  # type: ignore[misc]
            mark = len(served)
            _until(lambda want=want, mark=mark: want in served[mark:])  # type: ignore[misc]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors
    assert set(served) == {1, 2}
    assert registry.fetches.count(("churn", 2)) == 1  # one load per version, however many readers


# --- score() --------------------------------------------------------------------------------------


def test_score_returns_predictions_and_the_model_version_and_request_id_headers(cache: ModelCache) -> None:
    status, body, headers = score(cache, "churn", *FORMATS["dataframe_split"], request_id="req-1", max_bytes=MAX)
    assert status == 200 and headers == {"x-model-version": "1", "x-request-id": "req-1"}
    assert list(body) == ["predictions", "prediction_ids", "probabilities", "model"]  # MLflow's key first
    assert len(body["predictions"]) == 3 and body["model"] == {"name": "churn", "version": 1}


def test_score_maps_errors_to_mlflow_shaped_bodies(cache: ModelCache) -> None:
    status, body, headers = score(cache, "churn", b"{", "application/json", request_id="req-1", max_bytes=MAX)
    assert (status, body["error_code"], headers) == (400, "BAD_REQUEST", {"x-request-id": "req-1"})
    assert body["message"].startswith("request body is not valid JSON: ")
    status, body, _ = score(cache, "nope", b"{}", None, max_bytes=MAX)
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    status, body, _ = score(cache, "churn", b"{}", None, alias="previous", max_bytes=MAX)
    assert (status, body["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE")
    status, body, _ = score(cache, "churn", b"x" * 11, None, max_bytes=10)
    assert (status, body["error_code"]) == (413, "PAYLOAD_TOO_LARGE")


# (case, route model, ?alias=, ?version=, what the message says)
BAD_TARGETS: list[tuple[str, str | None, str | None, str | None, str]] = [
    ("dot", ".", None, None, "model name (got '.') is not valid: use 1-63 characters"),
    ("dot_dot", "..", None, None, "model name (got '..') is not valid: use 1-63 characters"),
    ("encoded_dot_dot", "%2e%2e", None, None, "model name (got '%2e%2e') is not valid: use 1-63 characters"),
    ("dot_dot_segment", "../churn", None, None, "model name (got '../churn') is not valid"),
    ("dotted", "churn.v2", None, None, "model name (got 'churn.v2') is not valid"),
    ("capitals", "Churn", None, None, "lowercase letters, digits, '-' and '_'"),
    ("empty", "", None, None, "model name (got '') is not valid"),
    ("absent", None, None, None, "model name (got None) is not valid"),
    ("too_long", "a" * 64, None, None, "1-63 characters"),
    ("unknown_alias", "churn", "challenger", None,
     "alias (got 'challenger') is not valid: use one of champion, previous"),
    ("empty_alias", "churn", "", None, "alias (got '') is not valid"),
    ("alias_in_capitals", "churn", "Champion", None, "alias (got 'Champion') is not valid"),
    ("superscript_two", "churn", None, "²", "?version= (got '²') is not valid: use a whole number from 1 to 999999"),
    ("arabic_indic_three", "churn", None, "٣", "?version= (got '٣') is not valid"),
    ("fullwidth_one", "churn", None, "１", "?version= (got '１') is not valid"),
    ("zero", "churn", None, "0", "?version= (got '0') is not valid"),
    ("negative", "churn", None, "-1", "?version= (got '-1') is not valid"),
    ("decimal", "churn", None, "1.0", "?version= (got '1.0') is not valid"),
    ("word", "churn", None, "abc", "?version= (got 'abc') is not valid"),
    ("blank_padded", "churn", None, " 1", "?version= (got ' 1') is not valid"),
    ("too_big", "churn", None, "1000000", "from 1 to 999999"),
    ("alias_and_version", "churn", "champion", "1", "pass either ?alias= or ?version=, not both"),
]


@pytest.mark.parametrize(("case", "model", "alias", "version", "says"), BAD_TARGETS, ids=[t[0] for t in BAD_TARGETS])
def test_a_bad_model_name_alias_or_version_is_a_400_before_storage_is_read(
    cache: ModelCache, registry: FakeRegistry, case: str, model: str | None, alias: str | None,
    version: str | None, says: str,
) -> None:
    status, body, headers = score(cache, model, FORMATS["dataframe_records"][0], "application/json",
                                  alias=alias, version=version, request_id="r", max_bytes=MAX)
    assert (status, body["error_code"], headers) == (400, "INVALID_PARAMETER_VALUE", {"x-request-id": "r"}), body
    assert says in body["message"]
    assert registry.resolves == 0 and registry.fetches == []
    assert not cache._locks


def test_a_valid_pin_from_the_query_string_is_served(cache: ModelCache, registry: FakeRegistry) -> None:
    registry.aliases[("churn", "previous")] = 2
    for alias, version, served in ((None, "2", 2), ("previous", None, 2), ("champion", None, 1), (None, 1, 1)):
        status, body, headers = score(cache, "churn", FORMATS["dataframe_records"][0], None, alias=alias,
                                      version=version, max_bytes=MAX)
        assert (status, headers["x-model-version"], body["model"]["version"]) == (200, str(served), served)


def test_storage_and_unexpected_failures_answer_without_internals(
    cache: ModelCache, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = "http://127.0.0.1:10000/devstoreaccount1"

    def unreachable(model: str, alias: str) -> tuple[int, str]:
        raise StorageUnreachable("storage is unreachable: transient, retry later",
                                 internal=f"storage (endpoint={endpoint}) is unreachable")

    def broken(model: str, alias: str) -> tuple[int, str]:
        raise OSError(f"[Errno 2] No such file: '/work/main/.secrets' at {endpoint}")

    for resolve, status, code in ((unreachable, 503, "STORAGE_UNREACHABLE"), (broken, 500, "INTERNAL_ERROR")):
        cache._resolve = resolve  # type: ignore[method-assign]
        with caplog.at_level("ERROR", logger="shared.scoring"):
            got_status, body, _ = score(cache, "churn", FORMATS["dataframe_records"][0], None, max_bytes=MAX)
        assert (got_status, body["error_code"]) == (status, code)
        assert_clean(body["message"])
    assert endpoint in caplog.text  # the operator still gets the details, in the log


def test_an_artifact_onnxruntime_cannot_load_answers_without_its_words() -> None:
    with pytest.raises(ModelArtifactError) as info:
        load_model(b"not onnx", fx.sha256(b"not onnx"), "churn", 1)
    assert_clean(info.value.message)
    assert "re-export" in info.value.message and "ONNXRuntimeError" in (info.value.internal or "")


def test_score_never_answers_500_for_bad_input(cache: ModelCache) -> None:
    model = cache.get("churn")
    for case, body, content_type, *_ in ERRORS:
        status, _, _ = score(cache, "churn", body, content_type, max_bytes=100 if case == "too_large" else MAX)
        assert 400 <= status < 500, case
    for junk in (b"null", b'{"data": null}', b'{"data": [[null, null, null]]}', b'{"inputs": {"torque": 1}}',
                 b'{"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}', b'{"data": [{"a": [1]}]}',
                 b'{"instances": [[1e400, 1, "L"]]}', b'{"data": [[123456789012345678901234567890, 1, "L"]]}'):
        status, body, _ = score(cache, "churn", junk, "application/json", max_bytes=MAX)
        assert status < 500, (junk, body)
    assert model.version == 1


def test_score_passes_inputs_result_and_ids_to_the_observer_and_survives_its_failure(cache: ModelCache) -> None:
    seen: list[Scored] = []

    def observe(scored: Scored) -> None:
        seen.append(scored)
        raise RuntimeError("logger broke")

    status, body, _ = score(cache, "churn", *FORMATS["instances_records"], request_id="r1", max_bytes=MAX,
                            observe=observe)
    assert status == 200 and len(seen) == 1
    (scored,) = seen
    assert (scored.model.version, scored.request_id, sorted(scored.inputs)) == (1, "r1", ["speed", "torque", "type"])
    assert scored.prediction_ids == body["prediction_ids"] == ["r1-0", "r1-1", "r1-2"]
    result = scored.result  # the output columns as arrays, whatever the answer's format
    assert result["predictions"].tolist() == body["predictions"]
    assert [dict(zip(result["probability_classes"], p, strict=True)) for p in result["probabilities"].tolist()] == \
        body["probabilities"]


# --- prediction ids -------------------------------------------------------------------------------

RECORDS = FORMATS["dataframe_records"][0]
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
LINE_KEYS = ["request_id", "prediction_id", "model", "version", "timestamp", "inputs", "outputs"]


def _ids_call(cache: ModelCache, body: bytes = RECORDS, content_type: str | None = "application/json",
              **headers: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    return score(cache, "churn", body, content_type, max_bytes=MAX, **headers)  # type: ignore[arg-type]


def _with_params(params: Any, doc: dict[str, Any] | None = None) -> bytes:
    return _json({**(doc or {"dataframe_records": ROWS}), "params": params})


def test_default_prediction_ids_are_the_request_id_and_the_row_index(cache: ModelCache) -> None:
    status, body, headers = _ids_call(cache, request_id="order-42:batch.7_x")
    assert status == 200 and headers["x-request-id"] == "order-42:batch.7_x"
    assert body["prediction_ids"] == ["order-42:batch.7_x-0", "order-42:batch.7_x-1", "order-42:batch.7_x-2"]


def test_without_a_request_id_a_fresh_uuid4_names_the_request_and_its_rows(cache: ModelCache) -> None:
    answers = [_ids_call(cache, request_id=rid) for rid in (None, "", None)]  # an empty header counts as absent
    rids = [headers["x-request-id"] for _, _, headers in answers]
    assert all(UUID4.fullmatch(rid) for rid in rids) and len(set(rids)) == 3, rids
    for (status, body, _), rid in zip(answers, rids, strict=True):
        assert status == 200 and body["prediction_ids"] == [f"{rid}-0", f"{rid}-1", f"{rid}-2"]


def test_the_longest_request_id_still_gives_default_ids_that_fit_the_id_rule(cache: ModelCache) -> None:
    rid = "r" * 100
    status, answer, _ = _ids_call(cache, _json({"dataframe_records": ROWS * 400}), request_id=rid)
    body = orjson.loads(orjson.dumps(answer))  # a big answer's ids are JSON text already (an orjson Fragment)
    assert status == 200 and body["prediction_ids"][-1] == rid + "-1199"
    assert all(names.PREDICTION_ID.fullmatch(pid) for pid in body["prediction_ids"])


def test_ids_from_the_header_are_answered_in_row_order(cache: ModelCache) -> None:
    status, body, headers = _ids_call(cache, request_id="r", prediction_ids="a-1, B.2 ,\tc:3")
    assert status == 200 and headers["x-request-id"] == "r"  # RFC 9110 list: blanks around commas are dropped
    assert body["prediction_ids"] == ["a-1", "B.2", "c:3"]
    longest = ",".join(f"{i}" + "x" * 127 for i in range(3))
    assert _ids_call(cache, prediction_ids=longest)[1]["prediction_ids"] == longest.split(",")


def test_ids_from_the_header_work_for_every_format_and_for_csv(cache: ModelCache) -> None:
    for fmt, (body, content_type) in FORMATS.items():
        status, answer, _ = _ids_call(cache, body, content_type, prediction_ids="x,y,z")
        assert (status, answer["prediction_ids"]) == (200, ["x", "y", "z"]), fmt


def test_ids_from_params_ids_are_answered_in_row_order(cache: ModelCache) -> None:
    split = {"dataframe_split": {"columns": COLUMNS, "data": _rows_in(COLUMNS)}}
    for doc in (None, split, {"instances": _rows_in(COLUMNS)}, {"inputs": {c: [r[c] for r in ROWS] for c in COLUMNS}}):
        body = _with_params({"ids": ["txn:1", "txn:2", "txn:3"], "temperature": 0}, doc)
        status, answer, _ = _ids_call(cache, body, request_id="r")
        assert (status, answer["prediction_ids"]) == (200, ["txn:1", "txn:2", "txn:3"]), doc


def test_params_without_ids_are_ignored_as_before_and_the_default_ids_apply(cache: ModelCache) -> None:
    for params in ({"ids": None}, {"x": 1}, {}, [["a", "b", "c"]], "ids", None):
        status, answer, _ = _ids_call(cache, _with_params(params), request_id="r")
        assert (status, answer["prediction_ids"]) == (200, ["r-0", "r-1", "r-2"]), params


CSV = FORMATS["csv_with_header"][0]
# (case, body, content type, x-request-id, x-prediction-ids, what the message says, refused before storage is read)
ID_REFUSALS: list[tuple[str, bytes, str, str | None, str | None, str, bool]] = [
    ("header_too_few", RECORDS, "application/json", None, "a,b",
     "header x-prediction-ids has 2 ids for 3 rows; send exactly one id per row, in row order", False),
    ("header_too_many", CSV, "text/csv", None, "a,b,c,d", "header x-prediction-ids has 4 ids for 3 rows", False),
    ("params_too_few", _with_params({"ids": ["a"]}), "application/json", None, None,
     "params.ids has 1 ids for 3 rows; send exactly one id per row", False),
    ("params_empty", _with_params({"ids": []}), "application/json", None, None, "params.ids has 0 ids for 3 rows",
     False),
    ("header_repeats", RECORDS, "application/json", None, "a,b,a",
     "header x-prediction-ids repeats ids ['a']; every row needs its own id", True),
    ("header_repeats_after_blanks", RECORDS, "application/json", None, "a, b,b ", "repeats ids ['b']", True),
    ("params_repeat", _with_params({"ids": ["x", "x", "x"]}), "application/json", None, None,
     "params.ids repeats ids ['x']", False),
    ("header_inner_blank", RECORDS, "application/json", None, "a,b c,d",
     "header x-prediction-ids item 1 ('b c') is not a valid id: use 1-128 characters", True),
    ("header_slash", RECORDS, "application/json", None, "a,../b,c", "item 1 ('../b') is not a valid id", True),
    ("header_non_ascii", RECORDS, "application/json", None, "a,b,é", "item 2 ('é') is not a valid id", True),
    ("header_empty_item", RECORDS, "application/json", None, "a,,b", "item 1 ('') is not a valid id", True),
    ("header_trailing_comma", RECORDS, "application/json", None, "a,b,c,", "item 3 ('') is not a valid id", True),
    ("header_empty", RECORDS, "application/json", None, "", "header x-prediction-ids is empty", True),
    ("header_blank", RECORDS, "application/json", None, "  ", "header x-prediction-ids is empty", True),
    ("header_id_too_long", RECORDS, "application/json", None, "a,b," + "c" * 129, "item 2 ('ccccccccc", True),
    ("params_not_a_list", _with_params({"ids": "a,b,c"}), "application/json", None, None,
     "params.ids must be a list of strings, one id per row; got a string", False),
    ("params_numbers", _with_params({"ids": ["a", 2, "c"]}), "application/json", None, None,
     "params.ids item 1: expected a string, got 2", False),
    ("params_bad_chars", _with_params({"ids": ["a", "b", "c\n"]}), "application/json", None, None,
     "params.ids item 2 ('c\\n') is not a valid id", False),
    ("params_id_too_long", _with_params({"ids": ["a", "b", "c" * 129]}), "application/json", None, None,
     "params.ids item 2 ('ccccccccc", False),
    ("both_header_and_params", _with_params({"ids": ["a", "b", "c"]}), "application/json", None, "a,b,c",
     "per-row ids came in both header x-prediction-ids and params.ids; send them in one place", False),
    ("request_id_blank_inside", RECORDS, "application/json", "my request", None,
     "header x-request-id ('my request') is not valid: use 1-100 characters", True),
    ("request_id_too_long", RECORDS, "application/json", "r" * 101, None, "header x-request-id ('rrrrrrr", True),
    ("request_id_header_injection", RECORDS, "application/json", "r1\r\nset-cookie: a=b", None,
     "header x-request-id ('r1\\r\\nset-cookie: a=b') is not valid", True),
    ("request_id_comma", RECORDS, "application/json", "r1,r2", None, "header x-request-id ('r1,r2')", True),
    ("request_id_non_ascii", RECORDS, "application/json", "ünïcode", None, "x-request-id ('ünïcode')", True),
]


@pytest.mark.parametrize(("case", "body", "content_type", "request_id", "header", "says", "early"), ID_REFUSALS,
                         ids=[r[0] for r in ID_REFUSALS])
def test_ids_that_break_a_rule_are_a_400_naming_the_problem(
    registry: FakeRegistry, clock: FakeClock, case: str, body: bytes, content_type: str, request_id: str | None,
    header: str | None, says: str, early: bool,
) -> None:
    cache = ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock)
    seen: list[Scored] = []
    status, answer, headers = score(cache, "churn", body, content_type, request_id=request_id, prediction_ids=header,
                                    max_bytes=MAX, observe=seen.append)
    assert (status, answer["error_code"]) == (400, "BAD_REQUEST"), answer
    assert says in answer["message"], answer["message"]
    assert_clean(answer["message"])
    assert set(answer) == {"error_code", "message"} and not seen
    # A refused x-request-id is not echoed; any other refusal names the request it refused.
    assert set(headers) == (set() if case.startswith("request_id") else {"x-request-id"})
    if early:  # header rules are checked with the model name, before storage is read
        assert registry.resolves == 0 and registry.fetches == []


def test_the_scorer_logs_every_row_with_the_prediction_id_it_answered(registry: FakeRegistry, clock: FakeClock) -> None:
    storage = MemoryStorage()
    scorer = Scorer(storage, Settings.from_env({}))  # type: ignore[arg-type]
    scorer.cache = ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock)
    try:
        by_header = scorer.score("churn", RECORDS, None, request_id="req-1", prediction_ids="a,b,c")
        by_default = scorer.score("churn", CSV, "text/csv", request_id="req-2")
        by_params = scorer.score("churn", _with_params({"ids": ["p0", "p1", "p2"]}), None)
        refused = scorer.score("churn", RECORDS, None, request_id="req-4", prediction_ids="a,a,b")
    finally:
        scorer.close()
    assert [answer[0] for answer in (by_header, by_default, by_params, refused)] == [200, 200, 200, 400]
    lines = [json.loads(line) for name in storage.blob_names(paths.PREDICTIONS)
             for line in storage.read(paths.PREDICTIONS, name).data.decode().splitlines()]
    answered = [(h["x-request-id"], pid) for _, body, h in (by_header, by_default, by_params)
                for pid in body["prediction_ids"]]
    assert [(line["request_id"], line["prediction_id"]) for line in lines] == answered
    assert answered[:6] == [("req-1", "a"), ("req-1", "b"), ("req-1", "c"),
                            ("req-2", "req-2-0"), ("req-2", "req-2-1"), ("req-2", "req-2-2")]
    assert [pid for _, pid in answered[6:]] == ["p0", "p1", "p2"]
    for line in lines:
        assert list(line) == LINE_KEYS and (line["model"], line["version"]) == ("churn", 1)
        assert list(line["outputs"]) == ["predictions", "probabilities"] and set(line["inputs"]) == set(COLUMNS)
    assert [line["outputs"]["predictions"] for line in lines[:3]] == by_header[1]["predictions"]


def test_the_scorer_answers_at_once_only_what_needs_no_storage_and_little_work(
    registry: FakeRegistry, clock: FakeClock
) -> None:
    """functions/score.py scores these on the event loop; everything else goes to a thread."""
    scorer = Scorer(MemoryStorage(), Settings.from_env({}))  # type: ignore[arg-type]
    scorer.cache = ModelCache(registry.resolve, registry.fetch, recheck_seconds=30, clock=clock)
    try:
        small, big = len(RECORDS), serving.INLINE_MAX_BYTES + 1
        assert not scorer.answers_at_once("churn", small)  # the champion is not in memory yet
        assert scorer.score("churn", RECORDS, None)[0] == 200
        assert scorer.answers_at_once("churn", small) and scorer.answers_at_once("churn", small, alias="champion")
        assert not scorer.answers_at_once("churn", big)
        assert not scorer.answers_at_once("churn", small, version="2")  # a pin not loaded yet
        assert scorer.answers_at_once("churn", small, version="x")  # refused with a 400 before storage
        assert scorer.answers_at_once("../etc", small) and scorer.answers_at_once(None, small)
        assert registry.fetches == [("churn", 1)]  # asking read nothing
    finally:
        scorer.close()


# --- the hot path stays light ---------------------------------------------------------------------


def test_importing_scoring_does_not_pull_in_training_libraries() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import shared.scoring; "
        "print(time.perf_counter() - t); "
        "heavy = {'sklearn', 'pandas', 'skl2onnx', 'onnx', 'scipy'}; "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.splitlines()
    assert heavy == ""
    # The target is 0.3 s on a warm disk cache; the bound here is loose so a busy CI box does not flake.
    assert float(seconds) < 2.0


@pytest.mark.parametrize(("task", "classes", "outputs", "lookup"), [
    ("classification", ["no", "yes"], ("label", "probabilities", "label_index"), ["no", "yes"]),
    ("classification", [0, 1, 2], ("label", "probabilities", "label_index"), [0, 1, 2]),
    ("classification", ["no", "yes"], ("label", "probabilities"), None),  # exported before the rewrite
    ("classification", [False, True], ("label", "probabilities", "label_index"), None),  # labels come as int64
    ("classification", [0, "x"], ("label", "probabilities", "label_index"), None),
    ("regression", [], ("variable", "label_index"), None),
])
def test_labels_come_from_the_label_index_only_when_the_classes_can_be_looked_up(
    task: str, classes: list[Any], outputs: tuple[str, ...], lookup: list[Any] | None,
) -> None:
    meta = json.dumps({"task": task, "features": [{"name": "a", "kind": "numeric"}], "classes": classes})
    sig = scoring.parse_signature(meta, {"a": "tensor(double)"}, outputs)
    assert sig.label_index is (lookup is not None)
    assert sig.run_outputs == ((scoring.LABEL_INDEX, "probabilities") if lookup is not None else sig.outputs)
    assert (None if sig.label_values is None else sig.label_values.tolist()) == lookup
    if lookup is not None:
        expected = object if type(lookup[0]) is str else np.int64
        assert sig.label_values is not None and sig.label_values.dtype == expected
