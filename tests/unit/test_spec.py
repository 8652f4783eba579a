"""Training spec: validation names the field, normalisation, canonical hashing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.errors import InvalidSpec
from shared.spec import TrainingSpec, comparison_rules, parse_spec, spec_hash

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
    details = errors_of(base(estimator={"type": "random_forest", "params": {"n_estimators": 0}}))
    assert fields(details) == ["estimator.params.n_estimators"]
    assert "range" in details[0]["message"]


def test_params_beyond_our_resource_limits_are_refused() -> None:
    details = errors_of(base(estimator={"type": "random_forest",
                                        "params": {"n_estimators": 5000}}))
    assert fields(details) == ["estimator.params.n_estimators"]
    assert "limit 1000" in details[0]["message"]


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


def test_default_comparison_is_the_primary_metric_with_no_regression() -> None:
    spec = parse_spec(json.dumps(base()), "s.json")
    assert list(comparison_rules(spec, 2)) == ["roc_auc"]
    assert list(comparison_rules(spec, 3)) == ["accuracy"]
    assert comparison_rules(spec, 2)["roc_auc"].max_regression == 0.0
    regression = parse_spec(json.dumps(base(task="regression", estimator={"type": "ridge"},
                                            quality_bar={})), "s.json")
    assert list(comparison_rules(regression, None)) == ["rmse"]
