"""Fuzz the scoring request path: whatever the body, content type, model name, pin, x-request-id or per-row
ids (x-prediction-ids, params.ids), the answer is a typed 4xx (or a 200), never an unexpected exception, a
500, a non-finite input or a leaked internal; a 200 carries exactly one valid, unique id per row.

Runs on real ONNX models (tests/unit/onnx_fixtures.py): a float32 classifier, a float64 regressor,
and an int64 signature for the parser alone. The examples are the same on every run unless
HYPOTHESIS_PROFILE is set to something other than "ci" (as in tests/unit/test_lifecycle_stateful.py).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared import names
from shared.errors import NotFound, PipelineError
from shared.scoring import (
    INPUT_KEYS,
    Feature,
    LoadedModel,
    ModelCache,
    Signature,
    load_model,
    parse_request,
    predict,
    score,
)
from tests.unit import onnx_fixtures as fx
from tests.unit.test_scoring import assert_clean

MAX = 1_000_000


def bounded(examples: int) -> settings:
    """Bounded example counts (2,500 in all, about 12 s on a 2-core VM), derandomized under "ci"."""
    return settings(
        max_examples=examples, derandomize=os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci", database=None,
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@functools.cache
def models() -> dict[str, LoadedModel]:
    """The served models by name, loaded once for every example."""
    loaded = {}
    for name, data in (("churn", fx.classifier()), ("wear", fx.regressor())):
        loaded[name] = load_model(data, fx.sha256(data), name, 1)
    return loaded


COUNT = Signature(
    name="count", task="regression", target="y", features=(Feature("count", "numeric", np.dtype(np.int64)),),
    classes=(), categorical_missing="missing", outputs=("variable",),
)
SIGNATURES = st.sampled_from(["churn", "wear", "count"])


def signature_of(name: str) -> Signature:
    return COUNT if name == "count" else models()[name].signature


@functools.cache
def cache() -> ModelCache:
    """A cache over the fixture models: champion and previous are version 1, unknown names are 404s."""
    artifacts = {name: (fx.classifier() if name == "churn" else fx.regressor()) for name in ("churn", "wear")}

    def resolve(model: str, alias: str) -> tuple[int, str]:
        if model not in artifacts:
            raise NotFound(f"model (name={model}) not found")
        return 1, '"etag-1"'

    def fetch(model: str, version: int) -> tuple[bytes, str]:
        if model not in artifacts or version != 1:
            raise NotFound(f"model version (name={model}, version={version}) not found")
        return artifacts[model], fx.sha256(artifacts[model])

    return ModelCache(resolve, fetch, recheck_seconds=3600)


# --- strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as it is: what json.dumps cannot write (NaN, 1e999, a lone surrogate)."""

    text: str


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(map(encode, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


ODD_JSON = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e300", "-1e300", "1" + "0" * 400, "-0", "1e-400",
            "9223372036854775808", "1E5", '"\\ud800"', '"\\udc00x"', '"٣"', '"1_0"', '"nan"', '""', "[[[[1]]]]",
            "[" * 600 + "]" * 600, "4.0", "4.5", "true", "{}"]
NAMES = st.sampled_from(["torque", "speed", "type", "count", "extra", "", "TORQUE"]) | st.text(max_size=6)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
           | st.sampled_from(ODD_JSON).map(Raw))
PLAIN_NUMBERS = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
NUMBERS = st.one_of(PLAIN_NUMBERS, PLAIN_NUMBERS, st.none(), st.integers(-(2**70), 2**70), st.floats(),
                    st.sampled_from(ODD_JSON[:12]).map(Raw))
CATEGORIES = st.sampled_from(["L", "M", "H", "missing", "", "never-seen"]) | st.text(max_size=6) | st.none()
# Rows in the feature order of the models, so most examples get as far as the value checks and the model.
MODEL_ROWS = st.lists(st.tuples(NUMBERS, NUMBERS, CATEGORIES).map(list), min_size=1, max_size=4)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(NAMES, inner, max_size=4), max_leaves=12)
SPLIT = st.builds(lambda rows, extra: {"columns": ["torque", "speed", "type"], "data": rows, **extra}, MODEL_ROWS,
                  st.fixed_dictionaries({}, optional={"index": JSON_VALUES}))
RECORDS = st.builds(lambda rows: [dict(zip(["torque", "speed", "type"], r, strict=True)) for r in rows], MODEL_ROWS)
COLUMNS = st.builds(lambda rows: {c: [r[i] for r in rows] for i, c in enumerate(["torque", "speed", "type"])},
                    MODEL_ROWS)
# A format key with a value of its shape: the bodies that get as far as the value checks and the model.
MATCHED = st.one_of(
    st.tuples(st.sampled_from(["dataframe_split", "input_data"]), SPLIT),
    st.tuples(st.sampled_from(["dataframe_records", "instances", "inputs", "data", "input_data"]), RECORDS),
    st.tuples(st.sampled_from(["instances", "inputs", "data", "input_data"]), MODEL_ROWS),
    st.tuples(st.sampled_from(["instances", "inputs"]), COLUMNS),
    st.tuples(st.sampled_from(INPUT_KEYS), st.builds(lambda rows: [{"count": r[0]} for r in rows], MODEL_ROWS)),
)
FORMAT_VALUES = st.one_of(
    SPLIT, RECORDS, COLUMNS, MODEL_ROWS,
    st.fixed_dictionaries({"data": st.lists(st.lists(SCALARS, max_size=4), max_size=4)},
                          optional={"columns": st.lists(NAMES, max_size=4), "index": JSON_VALUES}),
    st.lists(st.dictionaries(NAMES, SCALARS, max_size=4), max_size=4),
    st.dictionaries(NAMES, st.lists(SCALARS, max_size=4) | SCALARS, max_size=4),
    JSON_VALUES,
)
# Ids: mostly valid ones (so counts and duplicates are reached), then every kind of breakage.
VALID_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,10}", fullmatch=True)
ID_TEXT = st.one_of(
    VALID_IDS, VALID_IDS, st.sampled_from(["a", "a", "b", "..", "-", "x" * 128, "x" * 129, "", " ", "a b", "a,b", "é",
                                           "a\n", "a\r\nset-cookie: x", "\x00", "\ud800", "１"]),
    st.text(max_size=8),
)
REQUEST_IDS = st.none() | st.just("") | ID_TEXT | st.sampled_from(["r" * 100, "r" * 101]) | st.text(max_size=12)
HEADER_IDS = st.none() | st.lists(ID_TEXT, max_size=5).map(",".join) | st.text(max_size=16)
PARAMS_IDS = st.one_of(st.lists(ID_TEXT, max_size=5), st.lists(SCALARS, max_size=3), SCALARS,
                       st.dictionaries(NAMES, SCALARS, max_size=2))
EXTRA_KEYS = st.dictionaries(st.sampled_from(["params", "foo", "signature"]),
                             JSON_VALUES | st.fixed_dictionaries({"ids": PARAMS_IDS}), max_size=2)
DOCUMENTS = st.one_of(
    st.builds(lambda pair, extra: {pair[0]: pair[1], **extra}, MATCHED, EXTRA_KEYS),
    st.builds(lambda pair, extra: {pair[0]: pair[1], **extra}, MATCHED, EXTRA_KEYS),
    st.dictionaries(st.sampled_from([*INPUT_KEYS, "params", "foo"]), FORMAT_VALUES, max_size=3),
    JSON_VALUES,
)
CSV_CELLS = (st.sampled_from(["", "1", "1.5", "-2", "inf", "-inf", "nan", "NaN", "1e999", "1e300", "٣", "1_0", " 5 ",
                              "+1", ".5", "1.", "4.0", "9" * 30, "L", "M", '"a,b"', '"', "x\x00y", "１"])
             | st.text(max_size=6))
CSV_NUMBERS = st.one_of(PLAIN_NUMBERS.map(str), PLAIN_NUMBERS.map(str), CSV_CELLS)
MODEL_CSV_ROWS = st.one_of(
    st.builds(lambda rows: (["torque", "speed", "type"], rows),
              st.lists(st.tuples(CSV_NUMBERS, CSV_NUMBERS, CSV_CELLS).map(list), max_size=4)),
    st.builds(lambda rows: (["count"], [[r] for r in rows]), st.lists(CSV_NUMBERS, max_size=4)),
    st.tuples(st.lists(NAMES, max_size=4), st.lists(st.lists(CSV_CELLS, min_size=1, max_size=4), max_size=4)),
)
CSV_TEXT = st.builds(
    lambda table, end, bom: bom + end.join([",".join(table[0]), *(",".join(r) for r in table[1])]) + end,
    MODEL_CSV_ROWS, st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from(["", "\ufeff"]),
)
PARAMETERS = st.tuples(
    st.sampled_from(["charset", "Charset", " charset ", "format", "header", "boundary"]) | st.text(max_size=6),
    st.sampled_from(["utf-8", "UTF-8", "utf8", '"utf-8"', "latin-1", "utf-16", "utf-8-sig", ""]) | st.text(max_size=6),
).map(lambda kv: f"{kv[0]}={kv[1]}" if kv[1] or kv[0] else "")
MEDIA = (st.sampled_from(["application/json", "text/csv", "application/csv", "Application/JSON", "application/x+json",
                          "text/plain", "application/xml", "*/*", "", "json"]) | st.text(max_size=12))
CONTENT_TYPES = st.none() | st.builds(lambda media, params: ";".join([media, *params]), MEDIA,
                                      st.lists(PARAMETERS, max_size=3))
JSON_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "Application/JSON;"])
CSV_TYPES = st.sampled_from(["text/csv", "text/csv; charset=UTF-8", "application/csv", 'text/csv;charset="utf-8"'])
JSON_CONTENT_TYPES = st.one_of(JSON_TYPES, JSON_TYPES, CONTENT_TYPES)  # mostly accepted: the body is under test
CSV_CONTENT_TYPES = st.one_of(CSV_TYPES, CSV_TYPES, CONTENT_TYPES)


# --- properties ---------------------------------------------------------------------------------


def parses_or_refuses(body: bytes, content_type: str | None, name: str) -> None:
    """parse_request raises only a 4xx PipelineError; what it accepts is finite and the model scores it."""
    try:
        inputs = parse_request(body, content_type, signature_of(name), MAX)
    except PipelineError as err:  # anything else propagates and fails the test
        assert 400 <= err.status < 500, (err.status, err.message)
        assert_clean(err.message)
        return
    for array in inputs.values():
        assert array.dtype == object or not np.isinf(array).any(), inputs  # no ±inf ever reaches a model
    if name != "count":
        result = predict(models()[name], inputs)
        json.dumps(result, allow_nan=False)  # strict JSON out, whatever came in


@bounded(300)
@given(body=st.binary(max_size=200), content_type=CONTENT_TYPES, name=SIGNATURES)
def test_any_bytes_with_any_content_type_parse_or_get_a_4xx(body: bytes, content_type: str | None, name: str) -> None:
    parses_or_refuses(body, content_type, name)


@bounded(800)
@given(doc=DOCUMENTS, content_type=JSON_CONTENT_TYPES, name=SIGNATURES)
def test_json_ish_documents_with_odd_values_parse_or_get_a_4xx(doc: Any, content_type: str | None, name: str) -> None:
    parses_or_refuses(encode(doc).encode("utf-8", "surrogatepass"), content_type, name)


@bounded(600)
@given(text=CSV_TEXT, content_type=CSV_CONTENT_TYPES, name=SIGNATURES)
def test_csv_text_with_odd_cells_parses_or_gets_a_4xx(text: str, content_type: str | None, name: str) -> None:
    parses_or_refuses(text.encode("utf-8", "surrogatepass"), content_type, name)


@bounded(400)
@given(
    model=st.sampled_from(["churn", "wear", "nobody", ".", "..", "%2e%2e", "Churn"]) | st.text(max_size=8) | st.none(),
    alias=st.none() | st.sampled_from(["champion", "previous", "challenger", ""]) | st.text(max_size=6),
    version=st.none() | st.sampled_from(["1", "2", "²", "٣", "0", "1.0"]) | st.text(max_size=4) | st.integers(),
    body=st.one_of(DOCUMENTS.map(lambda d: encode(d).encode("utf-8", "surrogatepass")),
                   CSV_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=100)),
    content_type=st.one_of(JSON_TYPES, CSV_TYPES, CONTENT_TYPES),
    request_id=REQUEST_IDS,
    header=HEADER_IDS,
)
def test_score_answers_200_or_a_clean_4xx_whatever_the_route_query_body_and_ids(
    model: str | None, alias: str | None, version: str | int | None, body: bytes, content_type: str | None,
    request_id: str | None, header: str | None,
) -> None:
    status, answer, headers = score(cache(), model, body, content_type, alias=alias, version=version,
                                    request_id=request_id, prediction_ids=header, max_bytes=MAX)
    if status == 200:
        assert model in ("churn", "wear") and headers["x-model-version"] == "1"
        json.dumps(answer, allow_nan=False)
        ids = answer["prediction_ids"]
        assert len(ids) == len(set(ids)) == len(answer["predictions"])
        assert all(names.PREDICTION_ID.fullmatch(i) for i in ids), ids
        return
    assert 400 <= status < 500, (status, answer)
    assert set(answer) == {"error_code", "message"} and set(headers) <= {"x-request-id"}
    assert_clean(answer["message"])


def expected_ids(request_id: str | None, header: str | None, params_ids: Any, rows: int) -> list[str] | None:
    """The ids a request must be answered with ([] for the default ones), or None when it must be refused."""
    rule = names.PREDICTION_ID
    if request_id and (len(request_id) > 100 or not rule.fullmatch(request_id)):
        return None
    if header is not None and params_ids is not None:
        return None
    if header is not None:
        ids = [part.strip(" \t") for part in header.split(",")]
    elif params_ids is not None:
        if not isinstance(params_ids, list) or not all(isinstance(i, str) for i in params_ids):
            return None
        ids = params_ids
    else:
        return []
    if len(ids) != rows or len(set(ids)) != rows or not all(rule.fullmatch(i) for i in ids):
        return None
    return ids


CLEAN_ROWS = st.lists(st.tuples(PLAIN_NUMBERS, PLAIN_NUMBERS, st.sampled_from(["L", "M", "H"])).map(list),
                      min_size=1, max_size=4)
CLEAN = st.tuples(st.sampled_from(["instances", "inputs", "data"]), CLEAN_ROWS)  # rows the models score


@bounded(400)
@given(name=st.sampled_from(["churn", "wear"]), pair=st.one_of(CLEAN, CLEAN, CLEAN, MATCHED),
       request_id=st.one_of(st.none(), VALID_IDS, VALID_IDS, REQUEST_IDS),
       where=st.sampled_from(["default", "header", "header", "params", "params", "both"]), data=st.data())
def test_random_ids_are_answered_one_per_row_as_sent_or_refused_with_a_400(
    name: str, pair: tuple[str, Any], request_id: str | None, where: str, data: st.DataObject,
) -> None:
    doc = {pair[0]: pair[1]}
    base_status, base, _ = score(cache(), name, encode(doc).encode("utf-8", "surrogatepass"), None, max_bytes=MAX)
    rows = len(base["predictions"]) if base_status == 200 else 1
    right = st.lists(VALID_IDS, min_size=rows, max_size=rows, unique=True)  # mostly: the ones that must be kept
    ids = data.draw(st.one_of(right, right, st.lists(ID_TEXT, min_size=rows, max_size=rows),
                              st.lists(ID_TEXT, max_size=5)), label="ids")
    header = params_ids = None
    if where in ("header", "both"):
        header = data.draw(st.sampled_from([",", ", ", " ,\t"]), label="separator").join(ids)
    if where in ("params", "both"):
        params_ids = data.draw(st.one_of(st.just(ids), st.just(ids), PARAMS_IDS, st.none()), label="params.ids")
        doc["params"] = {"ids": params_ids}
    body = encode(doc).encode("utf-8", "surrogatepass")
    status, answer, headers = score(cache(), name, body, None, request_id=request_id, prediction_ids=header,
                                    max_bytes=MAX)
    assert_clean(answer.get("message", "-"))
    want = expected_ids(request_id, header, params_ids, rows)
    # pytest --hypothesis-show-statistics shows how often each case is reached
    event(f"ids from {where}: {status}, {'refused' if want is None else 'kept'} by the oracle")
    if base_status != 200:  # the rows are refused anyway; which refusal comes first is not under test here
        assert 400 <= status < 500 and set(answer) == {"error_code", "message"}, (status, answer)
    elif want is None:
        assert (status, answer["error_code"]) == (400, "BAD_REQUEST"), (status, answer)
        # an id rule; or raw JSON in params.ids (a lone surrogate, say) that makes the whole body invalid
        says = ("x-request-id", "x-prediction-ids", "params.ids", "not valid JSON")
        assert any(what in answer["message"] for what in says), answer
    else:
        assert status == 200, answer
        rid = headers["x-request-id"]
        assert rid == request_id if request_id else len(rid) == 36  # a fresh uuid4
        assert answer["predictions"] == base["predictions"]
        assert answer["prediction_ids"] == (want or [f"{rid}-{i}" for i in range(rows)])
