"""Holdout charts against sklearn's own results: confusion matrix, ROC curve and AUC; bounded sizes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from examples.datasets import breast_cancer
from shared import registry
from shared.holdout_charts import MAX_ROC_POINTS, MAX_SCATTER_POINTS, RESIDUAL_BINS, holdout_charts, thinned
from tests.e2e.support import example_spec
from tests.harness import LocalPipeline


def strict_json(charts: dict) -> dict:
    """Charts survive JSON without NaN or Infinity (the page's data island is parsed by JSON.parse)."""
    return json.loads(json.dumps(charts, allow_nan=False))


@pytest.mark.parametrize("classes", [["benign", "malignant"], [0, 1], [3, 5, 7]])
def test_the_confusion_matrix_equals_sklearns_in_class_order(classes: list) -> None:
    rng = np.random.default_rng(1)
    y_true = rng.choice(np.array(classes, dtype=object), 300)
    y_pred = np.where(rng.uniform(size=300) < 0.8, y_true, rng.choice(np.array(classes, dtype=object), 300))
    proba = rng.dirichlet(np.ones(len(classes)), 300)
    charts = strict_json(holdout_charts("classification", y_true, y_pred, proba, classes))
    assert charts["confusion"]["labels"] == [str(c) for c in classes]
    assert charts["confusion"]["matrix"] == confusion_matrix(list(y_true), list(y_pred), labels=classes).tolist()
    assert charts["rows"] == 300 and charts["confusion"]["left_out"] == 0


def test_a_small_roc_curve_is_exactly_sklearns_with_ties_and_its_auc_is_roc_auc_score() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    scores = np.round(np.clip(y * 0.3 + rng.uniform(size=150), 0, 1), 1)  # coarse: many ties
    proba = np.column_stack([1 - scores, scores])
    charts = strict_json(holdout_charts("classification", y, (scores > 0.5).astype(int), proba, [0, 1]))
    [curve] = charts["roc"]
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=True)
    assert curve["label"] == "1" and curve["points"] == len(fpr) <= MAX_ROC_POINTS
    np.testing.assert_allclose(curve["fpr"], fpr, rtol=1e-5)
    np.testing.assert_allclose(curve["tpr"], tpr, rtol=1e-5)
    np.testing.assert_allclose(curve["thresholds"][1:], thresholds[1:], rtol=1e-5)
    assert curve["thresholds"][0] is None  # sklearn's +inf
    assert curve["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-6)


def test_a_long_roc_curve_is_thinned_to_200_points_on_sklearns_curve() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 20_000)
    scores = y * 0.5 + rng.normal(size=20_000)
    charts = strict_json(holdout_charts("classification", y, (scores > 0.25).astype(int),
                                        np.column_stack([1 - scores, scores]), [0, 1]))
    [curve] = charts["roc"]
    fpr, tpr, _ = roc_curve(y, scores)
    assert curve["points"] == len(fpr) > MAX_ROC_POINTS
    assert len(curve["fpr"]) == len(curve["tpr"]) <= MAX_ROC_POINTS
    assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    distance = np.hypot(np.subtract.outer(curve["fpr"], fpr), np.subtract.outer(curve["tpr"], tpr)).min(axis=1)
    assert distance.max() < 1e-5  # every kept point is one of sklearn's (up to 6 significant digits)
    assert curve["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-6)  # computed before thinning
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(curve["auc"], abs=0.005)


def test_a_multiclass_model_gets_one_against_the_rest_curves_with_sklearns_aucs() -> None:
    rng = np.random.default_rng(4)
    classes = ["a", "b", "c"]
    y = rng.choice(np.array(classes, dtype=object), 500)
    proba = rng.dirichlet(np.ones(3), 500) + np.eye(3)[[classes.index(v) for v in y]] * 0.3
    charts = strict_json(holdout_charts("classification", y, y, proba, classes))
    assert [c["label"] for c in charts["roc"]] == classes
    for k, curve in enumerate(charts["roc"]):
        assert curve["auc"] == pytest.approx(roc_auc_score(y == classes[k], proba[:, k]), abs=1e-6)


def test_a_holdout_with_one_class_only_has_no_roc_curve() -> None:
    y = np.zeros(20, dtype=int)
    charts = holdout_charts("classification", y, y, np.column_stack([np.ones(20), np.zeros(20)]), [0, 1])
    assert charts["roc"] == [] and charts["confusion"]["matrix"] == [[20, 0], [0, 0]]


def test_a_regressor_gets_a_sampled_scatter_and_the_histogram_of_every_residual() -> None:
    rng = np.random.default_rng(5)
    actual = rng.normal(100, 20, 3000)
    predicted = actual + rng.normal(0, 5, 3000)
    charts = strict_json(holdout_charts("regression", actual, predicted, None, None))
    scatter, residuals = charts["scatter"], charts["residuals"]
    assert len(scatter["actual"]) == len(scatter["predicted"]) == scatter["sampled"] == MAX_SCATTER_POINTS
    assert scatter["of"] == 3000 and charts == strict_json(holdout_charts("regression", actual, predicted, None, None))
    counts, edges = np.histogram(actual - predicted, bins=RESIDUAL_BINS)
    assert residuals["counts"] == counts.tolist() and sum(residuals["counts"]) == 3000
    np.testing.assert_allclose(residuals["edges"], edges, rtol=1e-5)
    assert residuals["mean"] == pytest.approx(float(np.mean(actual - predicted)), rel=1e-5)
    small = holdout_charts("regression", actual[:40], predicted[:40], None, None)
    assert small["scatter"]["actual"] == pytest.approx(actual[:40].tolist(), rel=1e-5)


def test_thinning_keeps_the_ends_and_never_repeats_an_index() -> None:
    for n in (1, 2, 199, 200, 201, 10_000):
        kept = thinned(n, 200).tolist()
        assert kept[0] == 0 and kept[-1] == n - 1 and len(kept) == len(set(kept)) == min(n, 200)


def test_validation_stores_the_charts_as_a_checked_artifact_that_agrees_with_the_holdout_metrics() -> None:
    pipe = LocalPipeline()
    pipe.upload(example_spec("breast-cancer", "bc"))
    pipe.drop("bc", "a.csv", breast_cancer())
    pipe.run_until_idle()
    record = registry.get_version(pipe.storage, "bc", 1)
    charts = json.loads(registry.read_artifact(pipe.storage, record, "holdout_charts"))
    assert charts["rows"] == record.lineage["holdout_rows"] if record.lineage else False
    assert charts["roc"][0]["label"] == "malignant"
    assert charts["roc"][0]["auc"] == pytest.approx(record.metrics["onnx_holdout"]["roc_auc"], abs=1e-6)
    matrix = np.array(charts["confusion"]["matrix"])
    assert np.trace(matrix) / matrix.sum() == pytest.approx(record.metrics["onnx_holdout"]["accuracy"])
