"""Training spec: validation names the field, normalisation, canonical hashing, size and cost bounds."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.utils._param_validation import Interval

from examples import datasets
from shared.data_checks import prepare
from shared.errors import InvalidSpec, PayloadTooLarge
from shared.spec import (
    ESTIMATOR_PARAMS,
    MAX_CATEGORIES,
    MAX_CATEGORY_CHARS,
    MAX_COLUMN_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_FEATURES,
    MAX_NESTING,
    MAX_PROBLEMS,
    MAX_SPEC_BYTES,
    NOT_NULL_PARAMS,
    PARAM_BOUNDS,
    TrainingSpec,
    comparison_rules,
    param_bounds,
    parse_spec,
    spec_hash,
)
from shared.training import ESTIMATORS, train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"


def base(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "churn",
        "task": "classification",
        "target": "churned",
        "features": [{"name": "tenure", "kind": "numeric", "min": 0},
                     {"name": "plan", "kind": "categorical", "allowed": ["basic", "pro"]}],
        "estimator": {"type": "random_forest", "params": {"n_estimators": 50}},
        "quality_bar": {"roc_auc": {"min": 0.8}},
    }
    spec.update(changes)
    return spec


def errors_of(data: dict[str, Any] | str, filename: str = "spec.json") -> list[dict[str, str]]:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(text, filename)
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_SPEC"
    details = caught.value.details
    assert isinstance(details, list)
    return details


def fields(details: list[dict[str, str]]) -> list[str]:
    return [d["field"] for d in details]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_parses(path: Path) -> None:
    spec = parse_spec(path.read_bytes(), path.name)
    assert spec.name == path.stem


def test_defaults_are_filled_and_stratify_follows_the_task() -> None:
    spec = parse_spec(json.dumps(base()), "s.json")
    assert spec.split.holdout == 0.2 and spec.split.seed == 42 and spec.split.stratify is True
    assert spec.approval == "auto" and spec.latency_budget_ms == 50
    assert spec.data_checks.min_rows == 50 and spec.null_limit("tenure") == 0.2
    regression = base(task="regression", target="spend", estimator={"type": "ridge"},
                      quality_bar={"rmse": {"max": 10}})
    assert parse_spec(json.dumps(regression), "s.json").split.stratify is False


def test_unknown_estimator_names_the_type_field() -> None:
    details = errors_of(base(estimator={"type": "xgboost"}))
    assert fields(details) == ["estimator.type"]
    assert "logistic_regression" in details[0]["message"]


def test_unknown_param_names_the_param_and_lists_the_allowed_ones() -> None:
    details = errors_of(base(estimator={"type": "random_forest", "params": {"n_trees": 10}}))
    assert fields(details) == ["estimator.params.n_trees"]
    assert "n_estimators" in details[0]["message"] and "max_depth" in details[0]["message"]


def test_random_state_is_refused_because_the_seed_comes_from_split() -> None:
    details = errors_of(base(estimator={"type": "ridge", "params": {"random_state": 1}},
                             task="regression", quality_bar={}))
    assert fields(details) == ["estimator.params.random_state"]
    assert "split.seed" in details[0]["message"]


def test_out_of_range_param_value_is_judged_by_sklearn_and_names_the_param() -> None:
    details = errors_of(base(estimator={"type": "random_forest", "params": {"min_samples_split": 1}}))
    assert fields(details) == ["estimator.params.min_samples_split"]
    assert "range" in details[0]["message"] and "RandomForestClassifier" in details[0]["message"]


def test_params_beyond_our_resource_limits_are_refused() -> None:
    details = errors_of(base(estimator={"type": "random_forest",
                                        "params": {"n_estimators": 5000}}))
    assert fields(details) == ["estimator.params.n_estimators"]
    assert "value=5000 is outside the allowed range [1, 300]" in details[0]["message"]


def test_non_scalar_param_value_is_refused() -> None:
    details = errors_of(base(estimator={"type": "random_forest", "params": {"max_depth": [3]}}))
    assert all(f.startswith("estimator.params.max_depth") for f in fields(details))


def test_estimator_for_the_other_task_is_refused() -> None:
    details = errors_of(base(estimator={"type": "ridge"}))
    assert fields(details) == ["estimator.type"]
    assert "task=classification" in details[0]["message"]


def test_bar_metric_the_task_does_not_compute_is_refused() -> None:
    details = errors_of(base(quality_bar={"rmse": {"max": 3}}))
    assert fields(details) == ["quality_bar.rmse"]
    assert "roc_auc" in details[0]["message"]


def test_bar_in_the_wrong_direction_is_refused() -> None:
    details = errors_of(base(quality_bar={"roc_auc": {"max": 0.9}}))
    assert fields(details) == ["quality_bar.roc_auc"]
    assert "{min: x}" in details[0]["message"]


def test_comparison_needs_exactly_one_rule() -> None:
    details = errors_of(base(comparison={"accuracy": {"min_improvement": 0.1,
                                                      "max_regression": 0.1}}))
    assert fields(details) == ["comparison.accuracy"]


def test_feature_name_that_is_not_an_identifier_is_refused() -> None:
    spec = base()
    spec["features"][0]["name"] = "mean radius"
    details = errors_of(spec)
    assert fields(details) == ["features.0.name"]
    assert "ONNX input name" in details[0]["message"]


def test_duplicate_feature_is_refused() -> None:
    spec = base()
    spec["features"].append({"name": "tenure", "kind": "numeric"})
    details = errors_of(spec)
    assert fields(details) == ["features.2.name"]
    assert "duplicate" in details[0]["message"]


def test_feature_equal_to_the_target_is_refused() -> None:
    spec = base(target="tenure")
    assert fields(errors_of(spec)) == ["features.0.name"]


def test_ranges_on_categoricals_and_categories_on_numerics_are_refused() -> None:
    spec = base()
    spec["features"][0]["allowed"] = ["a"]
    spec["features"][1]["max"] = 3
    assert fields(errors_of(spec)) == ["features.0.allowed", "features.1.min"]


def test_every_problem_is_reported_at_once() -> None:
    spec = base(name="Churn_Model", split={"holdout": 0.2},
                quality_bar={"mae": {"max": 1}},
                estimator={"type": "random_forest", "params": {"trees": 3}})
    spec["features"][1]["name"] = "1plan"
    assert sorted(fields(errors_of(spec))) == sorted([
        "name", "features.1.name", "estimator.params.trees", "quality_bar.mae"])


def test_structural_errors_name_the_field() -> None:
    details = errors_of(base(split={"holdout": 0.6}, colour="red", approval="maybe"))
    assert sorted(fields(details)) == ["approval", "colour", "split.holdout"]


def test_stratified_regression_is_refused() -> None:
    spec = base(task="regression", estimator={"type": "ridge"}, quality_bar={},
                split={"stratify": True})
    assert fields(errors_of(spec)) == ["split.stratify"]


def test_per_column_null_limit_must_name_a_known_column() -> None:
    spec = base(data_checks={"per_column": {"tenure": 0.5, "ghost": 0.1}})
    assert fields(errors_of(spec)) == ["data_checks.per_column.ghost"]
    ok = parse_spec(json.dumps(base(data_checks={"per_column": {"tenure": 0.5}})), "s.json")
    assert ok.null_limit("tenure") == 0.5 and ok.null_limit("plan") == 0.2


def test_yaml_booleans_are_not_accepted_as_categories() -> None:
    text = yaml.safe_dump(base()).replace("- basic", "- yes")
    details = errors_of(text, "spec.yaml")
    assert fields(details)[0].startswith("features.1.allowed")
    assert "quote" in details[0]["message"]


def test_unparseable_yaml_and_json_are_invalid_specs() -> None:
    assert fields(errors_of("name: [unclosed", "spec.yaml")) == ["(file)"]
    assert fields(errors_of("{not json", "spec.json")) == ["(file)"]
    assert fields(errors_of("- a\n- b\n", "spec.yaml")) == ["(root)"]
    assert fields(errors_of("name: x", "spec.toml")) == ["(file)"]


def test_yaml_tags_that_would_build_python_objects_are_refused() -> None:
    text = "name: !!python/object/apply:os.system ['echo pwned']\n"
    assert fields(errors_of(text, "spec.yaml")) == ["(file)"]


def test_spec_hash_ignores_format_key_order_and_explicit_defaults() -> None:
    data = base()
    as_yaml = yaml.safe_dump(data, sort_keys=True, default_flow_style=True)
    reordered = dict(reversed(list(data.items())))
    reordered["split"] = {"seed": 42, "holdout": 0.2, "stratify": True}
    reordered["approval"] = "auto"
    hashes = {
        spec_hash(parse_spec(json.dumps(data, indent=4), "a.json")),
        spec_hash(parse_spec(as_yaml, "a.yaml")),
        spec_hash(parse_spec(json.dumps(reordered), "b.json")),
    }
    assert len(hashes) == 1
    changed = base(estimator={"type": "random_forest", "params": {"n_estimators": 51}})
    assert spec_hash(parse_spec(json.dumps(changed), "c.json")) not in hashes


def test_to_json_round_trips_to_the_same_spec() -> None:
    spec = parse_spec((EXAMPLES / "predictive-maintenance.yaml").read_bytes(), "pm.yaml")
    again = parse_spec(spec.to_json(), "pm.json")
    assert again == spec and spec_hash(again) == spec_hash(spec)
    assert isinstance(again, TrainingSpec)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_optional_flag_leaves_existing_spec_hashes_alone(path: Path) -> None:
    data = yaml.safe_load(path.read_bytes())
    spec = parse_spec(json.dumps(data), "a.json")
    assert "optional" not in spec.to_json() and "optional" not in spec.training_json()
    explicit = {**data, "features": [{**f, "optional": False} for f in data["features"]]}
    assert spec_hash(parse_spec(json.dumps(explicit), "b.json")) == spec_hash(spec)
    first = {**data["features"][0], "optional": True}
    optional = parse_spec(json.dumps({**data, "features": [first, *data["features"][1:]]}), "c.json")
    assert optional.features[0].optional is True and spec_hash(optional) != spec_hash(spec)
    assert parse_spec(optional.to_json(), "d.json") == optional  # the flag survives the stored form


def test_default_comparison_is_the_primary_metric_with_no_regression() -> None:
    spec = parse_spec(json.dumps(base()), "s.json")
    assert list(comparison_rules(spec, 2)) == ["roc_auc"]
    assert list(comparison_rules(spec, 3)) == ["accuracy"]
    assert comparison_rules(spec, 2)["roc_auc"].max_regression == 0.0
    regression = parse_spec(json.dumps(base(task="regression", estimator={"type": "ridge"},
                                            quality_bar={})), "s.json")
    assert list(comparison_rules(regression, None)) == ["rmse"]


# -- size, YAML features and nesting --------------------------------------------------------------


def yaml_errors(text: str) -> list[dict[str, str]]:
    return errors_of(text, "spec.yaml")


@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_spec_over_the_size_cap_is_refused_before_it_is_read(as_bytes: bool) -> None:
    text = "name: churn\n" + "# padding\n" * (MAX_SPEC_BYTES // 10)  # a comment: valid YAML
    with pytest.raises(PayloadTooLarge) as caught:
        parse_spec(text.encode() if as_bytes else text, "spec.yaml")
    assert caught.value.status == 413 and caught.value.code == "PAYLOAD_TOO_LARGE"
    size = len(text.encode())
    assert f"is {size} bytes" in caught.value.message and f"limit is {MAX_SPEC_BYTES} bytes" in caught.value.message


def test_the_size_cap_counts_utf8_bytes_and_refuses_a_2_mb_document() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_spec("é" * (MAX_SPEC_BYTES // 2 + 1), "spec.yaml")  # fewer characters than bytes
    with pytest.raises(PayloadTooLarge):  # took 33 s of CPU in yaml.safe_load before the cap
        parse_spec(b"- [a, b, {c: 1}]\n" * (2 * 1024 * 1024 // 17), "spec.yaml")


def test_a_worst_case_document_just_under_the_cap_is_read_and_refused_as_not_a_mapping() -> None:
    text = "[" + ",".join(["{a: [1, 2]}"] * ((MAX_SPEC_BYTES - 2) // 12)) + "]"
    assert len(text.encode()) <= MAX_SPEC_BYTES
    assert fields(yaml_errors(text)) == ["(root)"]


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))


@pytest.mark.parametrize(("text", "words"), [
    (BILLION_LAUGHS, "anchors and aliases (&a)"),
    ("name: &n churn\ntask: classification\n", "anchors and aliases (&n)"),
    ("name: *n\n", "anchors and aliases (*n)"),
    ("base: &b {x: 1}\nother:\n  <<: *b\n", "anchors and aliases (&b)"),
    ("name: !!python/object/apply:os.system ['echo pwned']\n", "tags (tag:yaml.org,2002:python/object/apply"),
    ("name: !!str churn\n", "tags (tag:yaml.org,2002:str)"),
    ("name: !custom churn\n", "tags (!custom)"),
    ("data: !!binary aGVsbG8=\n", "tags (tag:yaml.org,2002:binary)"),
    ("tags: !!set {a, b}\n", "tags (tag:yaml.org,2002:set)"),
    ("name: ! churn\n", "tags (!)"),
    ("other:\n  <<: {x: 1}\n", "'<<' has a special meaning"),
    ("name: =\n", "'=' has a special meaning"),
    ("? [a, b]\n: c\n", "a mapping key must be a plain value"),
    ("name: churn\n---\nname: other\n", "one YAML document"),
    ("a: " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "\n", f"nesting deeper than {MAX_NESTING}"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nesting deeper than"),  # crashed libyaml's own composer
    ("n: " + "9" * 5000 + "\n", "cannot read"),  # Python refuses int() of more than 4300 digits
])
def test_yaml_beyond_plain_values_is_refused_with_what_and_where(text: str, words: str) -> None:
    details = yaml_errors(text)
    assert fields(details) == ["(file)"]
    assert words in details[0]["message"] and "line " in details[0]["message"]


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,  # deeper than the JSON decoder's recursion limit
    '{"n": ' + "9" * 5000 + "}",
    '{"name": "churn",',
])
def test_json_that_cannot_be_read_is_an_invalid_spec(text: str) -> None:
    assert fields(errors_of(text, "spec.json")) == ["(file)"]


SCALARS = """
plain: text
quoted: '123'
double: "yes"
int: 42
negative: -7
hex: 0x1F
octal: 0o17
underscored: 1_000
sexagesimal: 1:30
float: 1.5
exponent: 1e3
infinity: .inf
minus_infinity: -.Inf
nan: .nan
null_word: null
tilde: ~
empty:
yes_word: yes
off_word: off
true_word: True
folded: >
  two
  lines
literal: |
  kept
  lines
list: [1, two, 3.0, null]
nested: {a: {b: [c]}}
"""


def test_the_strict_reader_reads_plain_values_exactly_as_safe_load_does() -> None:
    from shared.spec import _YamlReader

    ours = _YamlReader(SCALARS).read()
    theirs = yaml.safe_load(SCALARS)
    assert math.isnan(ours.pop("nan")) and math.isnan(theirs.pop("nan"))
    assert ours == theirs
    assert [type(v) for v in ours.values()] == [type(v) for v in theirs.values()]
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert _YamlReader(path.read_text()).read() == yaml.safe_load(path.read_text())


def test_dates_stay_strings_so_they_can_be_category_names() -> None:
    spec = base()
    spec["features"][1]["allowed"] = ["2024-01-01", "2024-02-01"]
    text = yaml.safe_dump(spec).replace("'2024-01-01'", "2024-01-01").replace("'2024-02-01'", "2024-02-01")
    assert "- 2024-01-01" in text
    assert parse_spec(text, "spec.yaml").features[1].allowed == ["2024-01-01", "2024-02-01"]


# -- names, lengths and counts ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ok"), [
    ("churn", True), ("churn_v2", True), ("a", True), ("a" * 63, True),
    ("churn\n", False), ("Churn", False), ("-churn", False), ("a" * 64, False), ("ch.urn", False), ("", False),
])
def test_the_model_name_follows_the_shared_rule_with_fullmatch(name: str, ok: bool) -> None:
    data = json.dumps(base(name=name))
    if ok:
        assert parse_spec(data, "s.json").name == name
    else:
        details = errors_of(data)
        assert fields(details) == ["name"] and "lowercase letters" in details[0]["message"]


def test_a_feature_name_with_a_trailing_newline_is_refused() -> None:
    spec = base()
    spec["features"][0]["name"] = "tenure\n"
    assert fields(errors_of(spec)) == ["features.0.name"]


def numeric_features(count: int) -> list[dict[str, Any]]:
    return [{"name": f"f{i}", "kind": "numeric"} for i in range(count)]


@pytest.mark.parametrize(("changes", "field"), [
    ({"features": numeric_features(MAX_FEATURES + 1)}, "features"),
    ({"description": "x" * (MAX_DESCRIPTION_CHARS + 1)}, "description"),
    ({"target": "t" * (MAX_COLUMN_CHARS + 1)}, "target"),
    ({"target": ""}, "target"),
    ({"features": [{"name": "f" * (MAX_COLUMN_CHARS + 1), "kind": "numeric"}]}, "features.0.name"),
    ({"features": [{"name": "c", "kind": "categorical", "allowed": [f"v{i}" for i in range(MAX_CATEGORIES + 1)]}]},
     "features.0.allowed"),
    ({"features": [{"name": "c", "kind": "categorical", "allowed": ["v" * (MAX_CATEGORY_CHARS + 1)]}]},
     "features.0.allowed.0"),
    ({"split": {"seed": 2**32}}, "split.seed"),
    ({"split": {"seed": -1}}, "split.seed"),
    ({"latency_budget_ms": 60_001}, "latency_budget_ms"),
    ({"data_checks": {"min_rows": 10**10}}, "data_checks.min_rows"),
    ({"features": [{"name": "x", "kind": "numeric", "min": float("nan")}]}, "features.0.min"),
    ({"quality_bar": {"roc_auc": {"min": float("inf")}}}, "quality_bar.roc_auc.min"),
    ({"latency_budget_ms": float("inf")}, "latency_budget_ms"),
])
def test_counts_lengths_and_numbers_outside_their_caps_are_refused(changes: dict[str, Any], field: str) -> None:
    assert fields(errors_of(base(**changes))) == [field]


def test_the_caps_themselves_are_allowed() -> None:
    longest = [f"{i:0{MAX_CATEGORY_CHARS}d}" for i in range(MAX_CATEGORIES)]
    features = [*numeric_features(MAX_FEATURES - 1), {"name": "c", "kind": "categorical", "allowed": longest}]
    spec = base(features=features, description="x" * MAX_DESCRIPTION_CHARS, target="t" * MAX_COLUMN_CHARS,
                split={"seed": 2**32 - 1})
    assert len(json.dumps(spec).encode()) <= MAX_SPEC_BYTES
    parsed = parse_spec(json.dumps(spec), "s.json")
    assert len(parsed.features) == MAX_FEATURES


def test_a_spec_whose_stored_json_would_exceed_the_cap_is_refused() -> None:
    # 'é' is 2 bytes in the file but 6 ('\\u00e9') in the stored JSON the registry re-reads.
    allowed = [f"{i:03d}" + "é" * 60 for i in range(MAX_CATEGORIES)]
    spec = base(features=[{"name": f"c{j}", "kind": "categorical", "allowed": allowed} for j in range(2)])
    text = json.dumps(spec, ensure_ascii=False).encode()
    assert len(text) <= MAX_SPEC_BYTES
    details = errors_of(text.decode())
    assert fields(details) == ["(file)"] and "normalised spec is" in details[0]["message"]


def test_the_problem_list_is_capped_and_counts_the_rest() -> None:
    spec = base(**{f"extra_{i}": i for i in range(MAX_PROBLEMS + 20)})
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(json.dumps(spec), "s.json")
    details = caught.value.details
    assert isinstance(details, list) and len(details) == MAX_PROBLEMS + 1
    assert details[-1] == {"field": "(more)", "message": "20 more problem(s) not listed"}
    assert f"{MAX_PROBLEMS + 20} problem(s)" in caught.value.message


# -- estimator param bounds ---------------------------------------------------------------------


def test_every_numeric_param_sklearn_accepts_has_our_bounds() -> None:
    for estimator, (_, allowed) in ESTIMATOR_PARAMS.items():
        constraints = ESTIMATORS[estimator]._parameter_constraints
        numeric = {key for key in allowed if any(isinstance(c, Interval) for c in constraints[key])}
        assert numeric == set(param_bounds(estimator)), estimator
    assert set(PARAM_BOUNDS) == {k for e in ESTIMATOR_PARAMS for k in param_bounds(e)}


def bounded_cases() -> list[tuple[str, str, Any]]:
    """(estimator, param, value just outside our bound) for every bounded param of every estimator."""
    cases = []
    for estimator in ESTIMATOR_PARAMS:
        for key, bound in param_bounds(estimator).items():
            above = bound.high + 1 if isinstance(bound.high, int) and bound.high >= 1 else bound.high * 10 or 1
            cases.append((estimator, key, above))
            if bound.low > 0:
                cases.append((estimator, key, bound.low / 10 if bound.low < 1 else bound.low - 1))
            cases += [(estimator, key, 10**400), (estimator, key, -(10**400)), (estimator, key, True)]
    return cases


def spec_with(estimator: str, params: dict[str, Any]) -> dict[str, Any]:
    task = ESTIMATOR_PARAMS[estimator][0]
    return base(task=task, target="y", estimator={"type": estimator, "params": params},
                quality_bar={}, features=[{"name": "x", "kind": "numeric"}])


@pytest.mark.parametrize(("estimator", "key", "value"), bounded_cases())
def test_a_param_outside_its_bounds_is_refused_naming_the_param(estimator: str, key: str, value: Any) -> None:
    details = errors_of(spec_with(estimator, {key: value}))
    assert fields(details) == [f"estimator.params.{key}"]
    assert key in details[0]["message"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_param_values_are_refused(value: float) -> None:
    details = errors_of(spec_with("ridge", {"alpha": value}))
    assert fields(details) == ["estimator.params.alpha"] and "finite" in details[0]["message"]


def test_null_is_refused_where_it_would_lift_the_bound_and_kept_where_it_is_the_default() -> None:
    assert NOT_NULL_PARAMS == {"max_leaf_nodes"}
    details = errors_of(spec_with("hist_gradient_boosting_regressor", {"max_leaf_nodes": None}))
    assert fields(details) == ["estimator.params.max_leaf_nodes"] and "null" in details[0]["message"]
    parsed = parse_spec(json.dumps(spec_with("random_forest_regressor", {"max_depth": None})), "s.json")
    assert parsed.estimator.params == {"max_depth": None}


def test_a_long_string_param_is_refused_before_sklearn_echoes_it() -> None:
    details = errors_of(spec_with("random_forest_regressor", {"criterion": "x" * 10_000}))
    assert fields(details) == ["estimator.params.criterion"] and len(details[0]["message"]) < 300


def top(estimator: str, key: str) -> int:
    return int(param_bounds(estimator)[key].high)


# The costliest params the bounds allow: the most trees or rounds, trees as large as allowed
# (max_depth None lets them grow to purity), every feature at every split, no early stopping,
# no shrinkage to stop boosting early, the slowest criterion.
_TREES = {"max_depth": None, "min_samples_split": 2, "min_samples_leaf": 1, "max_features": None}
_HIST = {"max_depth": None, "min_samples_leaf": 1, "early_stopping": False, "l2_regularization": 0.0,
         "learning_rate": 1e-6}
WORST_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": param_bounds("logistic_regression")["C"].high,
                            "max_iter": top("logistic_regression", "max_iter"), "tol": 0.0,
                            "class_weight": "balanced"},
    "random_forest": {"n_estimators": top("random_forest", "n_estimators"), "criterion": "entropy",
                      "bootstrap": False, "class_weight": "balanced", **_TREES},
    "gradient_boosting": {"n_estimators": top("gradient_boosting", "n_estimators"), "learning_rate": 0.0,
                          "subsample": 1.0, **_TREES},
    "hist_gradient_boosting": {"max_iter": top("hist_gradient_boosting", "max_iter"),
                               "max_leaf_nodes": top("hist_gradient_boosting", "max_leaf_nodes"),
                               "max_bins": top("hist_gradient_boosting", "max_bins"), "class_weight": "balanced",
                               **_HIST},
    "random_forest_regressor": {"n_estimators": top("random_forest_regressor", "n_estimators"),
                                "criterion": "absolute_error", "bootstrap": False, **_TREES},
    "ridge": {"alpha": 0.0, "tol": 0.0},
    "gradient_boosting_regressor": {"n_estimators": top("gradient_boosting_regressor", "n_estimators"),
                                    "learning_rate": 0.0, "subsample": 1.0, **_TREES},
    "hist_gradient_boosting_regressor": {"max_iter": top("hist_gradient_boosting_regressor", "max_iter"),
                                         "max_leaf_nodes": top("hist_gradient_boosting_regressor", "max_leaf_nodes"),
                                         "max_bins": top("hist_gradient_boosting_regressor", "max_bins"), **_HIST},
}
WORST_DATASET = {"classification": "breast-cancer", "regression": "diabetes"}


def worst_spec(estimator: str, dataset: str) -> TrainingSpec:
    data = yaml.safe_load((EXAMPLES / f"{dataset}.yaml").read_text())
    data.update(estimator={"type": estimator, "params": WORST_PARAMS[estimator]}, quality_bar={}, comparison=None)
    return parse_spec(json.dumps(data), "worst.json")


@pytest.mark.parametrize("estimator", sorted(ESTIMATOR_PARAMS))
def test_the_worst_allowed_spec_is_allowed_and_trains_a_bundled_example(estimator: str) -> None:
    """Measured on the 2-core VM: 0.1-3.5 s each (python -m tests.unit.test_spec prints the timings)."""
    dataset = WORST_DATASET[ESTIMATOR_PARAMS[estimator][0]]
    spec = worst_spec(estimator, dataset)
    assert spec.estimator.params == WORST_PARAMS[estimator]
    raw = {"breast-cancer": datasets.breast_cancer, "diabetes": datasets.diabetes}[dataset]()
    result = train(prepare(raw, spec).frame, spec)
    assert result.train_rows > 0 and all(np.isfinite(list(result.metrics.values())))


if __name__ == "__main__":  # timings of the worst allowed specs on every bundled example
    import sys
    import time

    from shared.onnx_export import export_onnx

    frames = {"breast-cancer": datasets.breast_cancer, "diabetes": datasets.diabetes,
              "predictive-maintenance": datasets.predictive_maintenance}
    names = sys.argv[1:] or sorted(ESTIMATOR_PARAMS)
    for name in names:
        task = ESTIMATOR_PARAMS[name][0]
        for dataset in [d for d in frames if (d == "diabetes") == (task == "regression")]:
            worst = worst_spec(name, dataset)
            prepared = prepare(frames[dataset](), worst).frame
            started = time.perf_counter()
            fitted = train(prepared, worst)
            trained = time.perf_counter() - started
            onnx = export_onnx(fitted.pipeline, worst, fitted.holdout.head(5))
            print(f"{name:34} {dataset:23} rows={len(prepared):5} train={trained:5.2f}s "
                  f"(fit {fitted.fit_seconds:5.2f}s) export={time.perf_counter() - started - trained:5.2f}s "
                  f"onnx={len(onnx) / 1e6:6.1f} MB", flush=True)


@pytest.mark.parametrize(("data", "filename", "expected"), [
    (b"name: churn\ntask: [broken\n", "spec.yaml", None),
    (b"name: churn\ntask: nonsense\n", "spec.yaml", "churn"),
    (b'{"name": "churn", "task": 1}', "spec.json", "churn"),
    (BILLION_LAUGHS.encode(), "spec.yaml", None),
    (b"name: ../../etc\n", "spec.yaml", None),
    (b"name: churn\n" + b"#" * MAX_SPEC_BYTES, "spec.yaml", None),
])
def test_the_name_of_an_invalid_spec_is_read_as_safely_as_a_spec(data: bytes, filename: str,
                                                                  expected: str | None) -> None:
    from shared.spec import name_hint

    assert name_hint(data, filename) == expected
