"""Data that passes the checks but cannot be trained or exported ends in a ModelRejected with a report."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared.data_checks import prepare
from shared.errors import ModelRejected
from shared.onnx_export import export_onnx
from shared.spec import TrainingSpec, parse_spec
from shared.training import train


def make_spec(estimator: str = "logistic_regression", task: str = "classification", target: str = "label",
              params: dict[str, Any] | None = None, **changes: Any) -> TrainingSpec:
    data: dict[str, Any] = {
        "name": "broken",
        "task": task,
        "target": target,
        "features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
                     {"name": "colour", "kind": "categorical"}],
        "estimator": {"type": estimator, "params": params or {}},
        "data_checks": {"min_rows": 10},
    }
    data.update(changes)
    return parse_spec(json.dumps(data), "spec.json")


def rows(n: int = 60, seed: int = 1) -> pd.DataFrame:
    """Clean, learnable rows: label and amount follow a and b."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 2, n)
    b = rng.normal(5, 1, n)
    return pd.DataFrame({
        "a": a, "b": b, "colour": rng.choice(["red", "blue"], n).astype(object),
        "label": np.where(a + rng.normal(0, 1, n) > 0, "yes", "no").astype(object),
        "amount": 10 * a + b + rng.normal(0, 0.1, n),
    })


def holdout_positions(n: int, spec: TrainingSpec) -> list[int]:
    """The rows an unstratified split puts in the holdout, so a test can plant a value there."""
    _, held = train_test_split(np.arange(n), test_size=spec.split.holdout, random_state=spec.split.seed)
    return sorted(int(i) for i in held)


def prepared(df: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """Passing the data checks first shows these are failures the checks cannot see."""
    return prepare(df[[*spec.feature_names, spec.target]], spec).frame


def rejection(df: pd.DataFrame, spec: TrainingSpec) -> tuple[ModelRejected, dict[str, Any]]:
    with pytest.raises(ModelRejected) as caught:
        train(df, spec)
    error = caught.value
    assert error.status == 422 and error.code == "MODEL_REJECTED"
    report = error.details
    assert isinstance(report, dict)
    assert report["status"] == "rejected" and report["stage"] == "train" and report["rows"] == len(df)
    assert report["columns"] == list(df.columns)
    json.dumps(report, allow_nan=False)  # the wire shape must serialise as is
    assert set(report["problems"][0]) == {"column", "check", "message", "count"}
    return error, report["problems"][0]


def no_runtime_warnings(recorded: pytest.WarningsRecorder) -> bool:
    return not [w for w in recorded if issubclass(w.category, RuntimeWarning)]


def test_values_that_overflow_the_scaler_are_rejected_naming_the_column(recwarn: pytest.WarningsRecorder) -> None:
    spec = make_spec()
    df = rows()
    df.loc[::4, "a"] = 1.5e308  # finite, so the data checks pass; their sum is not
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "non_finite_after_preprocessing" and problem["column"] == "a"
    assert problem["count"] == 48  # the mean is inf, so every training row of a is NaN
    assert "column=a" in error.message and "training row(s)" in error.message
    assert "model=broken" in error.message and "min/max" in error.message
    assert no_runtime_warnings(recwarn)


def test_a_holdout_value_beyond_float32_is_rejected_for_tree_models(recwarn: pytest.WarningsRecorder) -> None:
    spec = make_spec("random_forest", params={"n_estimators": 5}, split={"stratify": False})
    df = rows()
    df.loc[holdout_positions(len(df), spec)[0], "b"] = 1e100  # scaled fine, inf once cast to float32
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "non_finite_after_preprocessing" and problem["column"] == "b"
    assert problem["count"] == 1 and "holdout row(s)" in error.message and "float32" in error.message
    assert no_runtime_warnings(recwarn)


def test_a_training_split_with_a_single_class_is_rejected() -> None:
    spec = make_spec(split={"stratify": False})
    df = rows()
    df["label"] = "no"
    df.loc[holdout_positions(len(df), spec)[0], "label"] = "yes"  # the only "yes" lands in the holdout
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "single_class" and problem["column"] == "label" and problem["count"] == 1
    assert "column=label" in error.message and "split.stratify=true" in error.message


def test_a_value_error_raised_by_sklearn_during_fit_is_rejected_with_its_text() -> None:
    # Early stopping makes HistGradientBoosting split the training rows again, stratified: a class
    # with one training row makes sklearn raise ValueError, on every retry.
    spec = make_spec("hist_gradient_boosting", params={"early_stopping": True, "max_iter": 5},
                     split={"stratify": False})
    df = rows()
    planted = next(i for i in range(len(df)) if i not in holdout_positions(len(df), spec))
    df.loc[planted, "label"] = "maybe"
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "fit_failed" and problem["column"] is None
    assert "ValueError" in problem["message"] and "least populated" in problem["message"]
    assert "estimator=hist_gradient_boosting" in error.message and "estimator params" in error.message


def test_holdout_predictions_that_overflow_are_rejected_naming_the_driving_column(
        recwarn: pytest.WarningsRecorder) -> None:
    spec = make_spec("ridge", task="regression", target="amount")
    df = rows()
    # Scaled, 1e308 is still finite; times the Ridge coefficient (~20) it is inf.
    df.loc[holdout_positions(len(df), spec)[2], "a"] = 1e308
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "non_finite_output" and problem["column"] == "a" and problem["count"] == 1
    assert "inf/NaN predictions" in error.message and "column=a" in error.message
    assert no_runtime_warnings(recwarn)


def test_predictions_too_large_for_the_metrics_are_rejected_naming_the_driving_column(
        recwarn: pytest.WarningsRecorder) -> None:
    spec = make_spec("ridge", task="regression", target="amount")
    df = rows()
    df.loc[holdout_positions(len(df), spec)[0], "b"] = 1e200  # prediction ~1e200: its square is inf
    _, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "non_finite_output" and problem["column"] == "b" and problem["count"] == 1
    assert "predictions too large for metrics=['r2', 'rmse']" in problem["message"]
    assert no_runtime_warnings(recwarn)


def test_a_holdout_target_too_large_for_the_metrics_is_rejected_naming_the_target(
        recwarn: pytest.WarningsRecorder) -> None:
    spec = make_spec("ridge", task="regression", target="amount")
    df = rows()
    df.loc[holdout_positions(len(df), spec)[0], "amount"] = 1e200
    error, problem = rejection(prepared(df, spec), spec)
    assert problem["check"] == "non_finite_output" and problem["column"] == "amount"
    assert "rmse" in problem["message"] and "column=amount" in error.message
    assert no_runtime_warnings(recwarn)


def export_rejection(pipeline: Pipeline, spec: TrainingSpec, sample: pd.DataFrame) -> dict[str, Any]:
    with pytest.raises(ModelRejected) as caught:
        export_onnx(pipeline, spec, sample)
    error = caught.value
    assert error.status == 422 and error.code == "MODEL_REJECTED"
    report = error.details
    assert isinstance(report, dict)
    assert report["status"] == "rejected" and report["stage"] == "export" and report["rows"] == len(sample)
    problem: dict[str, Any] = report["problems"][0]
    assert problem["check"] == "onnx_conversion" and problem["column"] is None
    assert problem["message"] in error.message
    return problem


def test_an_estimator_skl2onnx_cannot_convert_is_rejected_at_export() -> None:
    spec = make_spec("ridge", task="regression", target="amount")
    frame = prepared(rows(), spec)
    # KernelRidge has no skl2onnx converter; the spec allow-list would never build it.
    pipeline = Pipeline([("preprocess", ColumnTransformer([("numeric", StandardScaler(), ["a", "b"])])),
                         ("estimator", KernelRidge())]).fit(frame, frame["amount"])
    problem = export_rejection(pipeline, spec, frame)
    assert "skl2onnx cannot convert" in problem["message"] and "KernelRidge" in problem["message"]


def test_a_graph_that_does_not_run_on_the_sample_is_rejected_at_export() -> None:
    classification = make_spec()
    frame = prepared(rows(), classification)
    fitted = train(frame, classification)
    # A classifier exported under a regression spec converts (with a ZipMap) but onnxruntime
    # refuses the graph: the smoke run fails.
    regression = make_spec("ridge", task="regression", target="amount")
    problem = export_rejection(fitted.pipeline, regression, frame.assign(amount=1.0))
    assert "does not run on the sample rows" in problem["message"] and "ZipMap" in problem["message"]
