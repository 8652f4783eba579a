"""Fuzzing: whatever a caller sends as a spec or a dataset, only our own 4xx errors come back.

parse_spec takes random text, bytes, YAML and JSON dumps of random structures, spec-shaped documents
with random params, anchors, tags, huge numbers and odd unicode: only InvalidSpec or PayloadTooLarge
may escape, and a spec it accepts keeps every numeric param within its bounds and re-reads from its
stored JSON. load_dataset + check_dataset + prepare take random CSV and JSONL bytes: only
DataRejected may escape, and every report is strict JSON.

MLOPS_FUZZ_EXAMPLES multiplies the example counts (2,600 in all by default: about 10 s on a 2-core VM).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.data_checks import check_dataset, load_dataset, prepare
from shared.errors import DataRejected, InvalidSpec, PayloadTooLarge
from shared.spec import (
    ESTIMATOR_PARAMS,
    MAX_FEATURES,
    MAX_SPEC_BYTES,
    NOT_NULL_PARAMS,
    PARAM_BOUNDS,
    TrainingSpec,
    param_bounds,
    parse_spec,
    spec_hash,
)

SCALE = float(os.environ.get("MLOPS_FUZZ_EXAMPLES", "1"))


def fuzz(examples: int) -> settings:
    """Bounded example counts, the same on every run under the "ci" profile (tests/conftest.py)."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    derandomize=os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- strategies: spec documents -------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates too
huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, floats, any_text)
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(any_text, st.sampled_from(
        ["name", "task", "target", "features", "estimator", "params", "type", "kind", "allowed"])), inner, max_size=5)),
    max_leaves=20)


def edges(key: str) -> st.SearchStrategy[Any]:
    """Values around a param's bounds, plus the odd ones."""
    bound = PARAM_BOUNDS.get(key)
    near: list[Any] = [] if bound is None else [
        bound.low, bound.high, bound.high + 1, bound.low - 1, bound.high * 2, int(bound.high), bound.low / 2,
        (bound.low + bound.high) / 2, int(bound.low) + 1]
    options = [1, 2, 3, 0, -1, 0.5, 1.0, None, True, "sqrt", "log2", "balanced", "auto", "entropy",
               "absolute_error", "x" * 100, 10**400, float("inf"), float("nan")]
    return st.one_of(st.sampled_from(near + options), st.integers(-5, 2000), st.floats(-1e9, 1e9))


def mostly(valid: Any, odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value most of the time, else an odd one: every field stays in play, many specs get far.

    (one_of and sampled_from lean to their ends; a middle value of a wide range is drawn rarely.)
    """
    return st.integers(0, 11).flatmap(lambda pick: odd if pick == 5 else st.just(valid))


@st.composite
def spec_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Spec-shaped documents: mostly valid outside the params, so many are accepted."""
    estimator = draw(st.sampled_from(sorted(ESTIMATOR_PARAMS)))
    keys = draw(st.lists(st.sampled_from([*ESTIMATOR_PARAMS[estimator][1], "random_state", "n_jobs"]),
                         max_size=6, unique=True))
    feature_count = draw(mostly(2, st.sampled_from([1, MAX_FEATURES, MAX_FEATURES + 1])))
    doc: dict[str, Any] = {
        "name": draw(mostly("churn", st.sampled_from(["churn\n", "Churn", "a" * 64, "a-b_c", ""]))),
        "task": draw(mostly(ESTIMATOR_PARAMS[estimator][0], any_text)),
        "target": draw(mostly("y", st.sampled_from(["", "x0", "y" * 200]))),
        "features": [{"name": f"x{i}", "kind": "numeric"} for i in range(feature_count)],
        "estimator": {"type": estimator, "params": {key: draw(edges(key)) for key in keys}},
    }
    doc["features"][0] = draw(mostly(doc["features"][0], st.builds(
        lambda allowed: {"name": "c", "kind": "categorical", "allowed": allowed},
        st.lists(st.one_of(any_text, st.integers(), st.booleans()), max_size=4))))
    if not draw(mostly(True, st.just(False))):
        doc[draw(st.sampled_from(["split", "data_checks", "quality_bar", "description", "latency_budget_ms"]))] = \
            draw(structures)
    return doc


def dumps(doc: Any, as_yaml: bool) -> str:
    if as_yaml:
        return yaml.safe_dump(doc, allow_unicode=True)
    return json.dumps(doc, ensure_ascii=False)


YAML_PIECES = ["&a ", "*a", "&b [1, 2]", "*b", "!!python/object:os.system ", "!tag ", "!!str ", "!!binary ",
               "<<: ", "<<: *a", "---\n", "...\n", "? ", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "'", '"',
               "#", "|\n  ", ">\n  ", "1e999", "9" * 5000, ".inf", ".nan", "0x1F", "2024-01-01", "yes", "~",
               "name", "features", "estimator", "params", "\t", "\x00", "\ufeff", "\u2028", "😀", "%YAML 1.1\n"]


def check_accepted(spec: TrainingSpec) -> None:
    """An accepted spec keeps every bound and re-reads from its stored JSON unchanged."""
    bounds = param_bounds(spec.estimator.type)
    for key, value in spec.estimator.params.items():
        assert key in ESTIMATOR_PARAMS[spec.estimator.type][1]
        if key in bounds and value is not None and not isinstance(value, str):
            assert not isinstance(value, bool) and isinstance(value, int | float), (key, value)
            assert bounds[key].low <= value <= bounds[key].high, (key, value)
        assert value is not None or key not in NOT_NULL_PARAMS
    assert 1 <= len(spec.features) <= MAX_FEATURES
    stored = json.dumps(json.loads(spec.to_json()))  # what registry.current_spec parses again
    assert len(stored) <= MAX_SPEC_BYTES
    assert parse_spec(stored, "stored.json") == spec
    assert len(spec_hash(spec)) == 64


def parse_or_refuse(data: bytes | str, filename: str) -> None:
    try:
        spec = parse_spec(data, filename)
    except InvalidSpec as exc:
        assert exc.status == 400 and isinstance(exc.details, list) and exc.details
        json.dumps(exc.details, allow_nan=False)
        assert len(exc.message) < 2000
    except PayloadTooLarge as exc:
        assert exc.status == 413
    else:
        check_accepted(spec)


FILENAMES = st.sampled_from(["spec.yaml", "spec.yml", "spec.json", "SPEC.JSON", "spec.toml"])


@fuzz(1000)
@given(doc=st.one_of(
    st.builds(dumps, spec_documents(), st.booleans()),
    st.builds(dumps, structures, st.booleans()),
    st.lists(st.sampled_from(YAML_PIECES), max_size=30).map("".join),
    any_text,
    st.binary(max_size=200),
), filename=FILENAMES)
def test_parse_spec_only_ever_raises_invalid_spec_or_payload_too_large(doc: str | bytes, filename: str) -> None:
    parse_or_refuse(doc, filename)
    if isinstance(doc, str):
        try:
            encoded = doc.encode("utf-8")
        except UnicodeEncodeError:
            return
        parse_or_refuse(encoded, filename)


@fuzz(400)
@given(doc=spec_documents())
def test_accepted_random_specs_keep_their_bounds_in_yaml_and_json(doc: dict[str, Any]) -> None:
    for as_yaml, filename in ((True, "spec.yaml"), (False, "spec.json")):
        try:
            text = dumps(doc, as_yaml)
        except (ValueError, UnicodeEncodeError):  # json/yaml cannot write some values: nothing to parse
            continue
        parse_or_refuse(text, filename)


def test_the_fuzzer_reaches_accepted_specs() -> None:
    """Guards the strategies: a spec-shaped document with in-bound params is accepted."""
    doc = {"name": "churn", "task": "regression", "target": "y", "features": [{"name": "x0", "kind": "numeric"}],
           "estimator": {"type": "hist_gradient_boosting_regressor",
                         "params": {k: b.high for k, b in param_bounds("hist_gradient_boosting_regressor").items()}}}
    check_accepted(parse_spec(dumps(doc, True), "spec.yaml"))


# -- strategies: datasets -------------------------------------------------------------------------

CELLS = st.one_of(
    st.sampled_from(["", "1", "-2.5", "0", "inf", "-inf", "Infinity", "nan", "NaN", "1e999", "-1e999", "1e308",
                     "9" * 400, "a", "b", "__missing__", "True", '"1,2"', '"', "\n", "x.1", "null", "None"]),
    st.integers().map(str), st.floats().map(repr), any_text.filter(lambda t: "\x00" not in t),
)
HEADERS = st.lists(st.sampled_from(["x", "c", "y", "x.1", "", "z", "x ", "Unnamed: 0"]), min_size=1, max_size=5)


VALID_CELLS = {"x": ["1", "-2.5", "0", "9.75", "", "1e1"], "c": ["a", "b", ""], "y": ["0", "1"]}
VALID_VALUES: dict[str, list[Any]] = {"x": [1, -2.5, 0, 9.75, None, 1e1], "c": ["a", "b", None], "y": [0, 1]}


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """CSV files close to valid (so some reach prepare) with odd headers and cells mixed in."""
    header = draw(mostly(["x", "c", "y"], HEADERS))
    rows = draw(st.lists(st.tuples(*[
        mostly(None, CELLS).flatmap(lambda odd, name=name: st.just(odd) if odd is not None
                                    else st.sampled_from(VALID_CELLS.get(name, ["1"])))
        for name in header]), min_size=1, max_size=8))
    text = "\n".join(",".join(row) for row in [header, *rows])
    return text.encode("utf-8", "surrogatepass")


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """JSONL records close to valid, with odd keys and values (huge ints, inf, lists) mixed in."""
    odd_values = st.one_of(scalars, st.lists(scalars, max_size=2))
    records = []
    for _ in range(draw(st.integers(1, 8))):
        keys = draw(mostly(["x", "c", "y"], st.lists(st.sampled_from(["x", "c", "y", "z"]), max_size=4)))
        records.append({key: draw(mostly(None, odd_values).flatmap(
            lambda odd, key=key: st.just(odd) if odd is not None else st.sampled_from(VALID_VALUES.get(key, [1]))))
            for key in keys})
    return "\n".join(json.dumps(r) for r in records).encode("utf-8", "surrogatepass")


def small_specs() -> list[TrainingSpec]:
    features = [{"name": "x", "kind": "numeric", "min": -10, "max": 10},
                {"name": "c", "kind": "categorical", "allowed": ["a", "b"]}]
    common = {"name": "fuzz", "target": "y", "features": features, "data_checks": {"min_rows": 2,
                                                                                      "max_null_fraction": 0.5}}
    return [parse_spec(json.dumps({**common, "task": "regression", "estimator": {"type": "ridge"}}), "s.json"),
            parse_spec(json.dumps({**common, "task": "classification",
                                   "estimator": {"type": "logistic_regression"}}), "s.json")]


SPECS = small_specs()


@fuzz(800)
@given(data=st.one_of(csv_files(), st.binary(max_size=300)), filename=st.sampled_from(["d.csv", "d.jsonl"]),
       spec=st.sampled_from(SPECS))
def test_a_dataset_of_random_bytes_only_ever_raises_data_rejected(data: bytes, filename: str,
                                                                  spec: TrainingSpec) -> None:
    load_check_prepare(data, filename, spec)


@fuzz(400)
@given(data=jsonl_files(), spec=st.sampled_from(SPECS))
def test_a_jsonl_dataset_of_random_values_only_ever_raises_data_rejected(data: bytes, spec: TrainingSpec) -> None:
    load_check_prepare(data, "d.jsonl", spec)


def load_check_prepare(data: bytes, filename: str, spec: TrainingSpec) -> None:
    try:
        frame = load_dataset(data, filename)
        report = check_dataset(frame, spec)
        if report is not None:
            json.dumps(report.to_dict(), allow_nan=False)
            return
        prepared = prepare(frame, spec)
    except DataRejected as exc:
        assert exc.status == 422
        json.dumps(exc.details, allow_nan=False)
        return
    values = prepared.frame["x"].dropna().to_numpy()
    assert all(math.isfinite(v) and -10 <= v <= 10 for v in values)


@pytest.mark.parametrize(("filename", "data"), [
    ("d.csv", b"x,c,y\n1,a,1\n2,b,2\n"),
    ("d.jsonl", b'{"x": 1, "c": "a", "y": 1}\n{"x": 2, "c": "b", "y": 0}\n'),
])
def test_the_dataset_fuzzer_reaches_accepted_data(filename: str, data: bytes) -> None:
    for spec in SPECS:
        assert check_dataset(load_dataset(data, filename), spec) is None
