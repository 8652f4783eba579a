"""The holdout charts a version keeps from validation, for the model pages (numpy only; bounded in size).

Classifiers: the confusion matrix (rows: true class, columns: predicted, in the version's class order)
and ROC curves (binary: the positive class is classes[1], sklearn's convention and compute_metrics';
multiclass: one-vs-rest for the first MAX_ROC_CLASSES classes), each curve computed as sklearn's
roc_curve(drop_intermediate=True) does, then thinned to at most MAX_ROC_POINTS points (the first and
last always kept). Regressors: predicted vs actual on a seeded sample of at most MAX_SCATTER_POINTS
rows, and a histogram of every residual (actual - predicted). Numbers are rounded to 6 significant
digits and every float is finite, so the JSON stays small (a few KiB) and valid.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FORMAT = 1
MAX_ROC_POINTS = 200
MAX_ROC_CLASSES = 10
MAX_CONFUSION_CLASSES = 50
MAX_SCATTER_POINTS = 500
RESIDUAL_BINS = 30


def holdout_charts(task: str, y_true: Any, y_pred: Any, proba: Any, classes: Sequence[Any] | None,
                   *, seed: int = 0) -> dict[str, Any]:
    """The charts of one version's holdout predictions (JSON-ready)."""
    if task == "classification":
        return {"format": FORMAT, "task": task, "rows": int(np.asarray(y_true).size),
                **classifier_charts(y_true, y_pred, proba, list(classes or []))}
    return {"format": FORMAT, "task": task, "rows": int(np.asarray(y_true).size),
            **regressor_charts(y_true, y_pred, seed=seed)}


# -- classifiers ------------------------------------------------------------------------------------


def classifier_charts(y_true: Any, y_pred: Any, proba: Any, classes: list[Any]) -> dict[str, Any]:
    """Confusion matrix and ROC curve(s); labels are compared by their text (1 and "1" are one class)."""
    truth = _labels(y_true)
    charts: dict[str, Any] = {"confusion": confusion_matrix(truth, _labels(y_pred), classes), "roc": []}
    if proba is None or not classes:
        return charts
    scores = np.asarray(proba, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        return charts
    targets = [1] if len(classes) == 2 else range(min(len(classes), MAX_ROC_CLASSES))
    for k in targets:
        curve = roc_curve(truth == str(classes[k]), scores[:, k])
        if curve is not None:
            charts["roc"].append({"label": str(classes[k]), **curve})
    return charts


def _labels(values: Any) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values).ravel().tolist()], dtype=object)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Counts per (true, predicted) class in class order; pairs outside the first MAX_CONFUSION_CLASSES are left out."""
    labels = [str(c) for c in classes][:MAX_CONFUSION_CLASSES]
    index = {label: i for i, label in enumerate(labels)}
    rows = np.array([index.get(t, -1) for t in y_true.tolist()], dtype=np.int64)
    cols = np.array([index.get(p, -1) for p in y_pred.tolist()], dtype=np.int64)
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (rows[keep], cols[keep]), 1)
    return {"labels": labels, "matrix": matrix.tolist(), "truncated": len(classes) > len(labels),
            "left_out": int(keep.size - np.count_nonzero(keep))}


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> dict[str, Any] | None:
    """fpr, tpr and thresholds as sklearn's roc_curve (drop_intermediate=True), thinned; None if one class only."""
    finite = np.isfinite(scores)
    positive, scores = np.asarray(positive, dtype=bool)[finite], scores[finite]
    if positive.all() or not positive.any():
        return None
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, positive = scores[order], positive[order]
    cut = np.r_[np.where(np.diff(scores))[0], positive.size - 1]  # the last row of each distinct score
    tps = np.cumsum(positive)[cut].astype(np.float64)
    fps = 1 + cut - tps
    thresholds = scores[cut]
    corners = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
    fps, tps, thresholds = np.r_[0.0, fps[corners]], np.r_[0.0, tps[corners]], np.r_[np.inf, thresholds[corners]]
    fpr, tpr = fps / fps[-1], tps / tps[-1]
    auc = float(np.trapezoid(tpr, fpr))
    keep = thinned(fpr.size, MAX_ROC_POINTS)
    return {"fpr": _rounded(fpr[keep]), "tpr": _rounded(tpr[keep]), "thresholds": _rounded(thresholds[keep]),
            "auc": _round(auc), "points": int(fpr.size)}


def thinned(n: int, limit: int) -> np.ndarray:
    """At most `limit` evenly spread indices of range(n), first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, limit)).astype(np.int64))


# -- regressors -------------------------------------------------------------------------------------


def regressor_charts(y_true: Any, y_pred: Any, *, seed: int = 0) -> dict[str, Any]:
    """Predicted vs actual on a seeded sample, and the histogram of every residual (actual - predicted)."""
    actual = np.asarray(y_true, dtype=np.float64).ravel()
    predicted = np.asarray(y_pred, dtype=np.float64).ravel()
    finite = np.isfinite(actual) & np.isfinite(predicted)
    actual, predicted = actual[finite], predicted[finite]
    residuals = actual - predicted
    sample = np.arange(actual.size)
    if actual.size > MAX_SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(seed).choice(actual.size, MAX_SCATTER_POINTS, replace=False))
    counts, edges = (np.histogram(residuals, bins=RESIDUAL_BINS) if residuals.size
                     else (np.zeros(0, dtype=np.int64), np.zeros(0)))
    return {
        "scatter": {"actual": _rounded(actual[sample]), "predicted": _rounded(predicted[sample]),
                    "sampled": int(sample.size), "of": int(actual.size)},
        "residuals": {"edges": _rounded(edges), "counts": [int(c) for c in counts],
                      "mean": _round(float(residuals.mean())) if residuals.size else None,
                      "std": _round(float(residuals.std())) if residuals.size else None},
    }


def _round(value: float) -> float | None:
    return float(f"{value:.6g}") if np.isfinite(value) else None


def _rounded(values: np.ndarray) -> list[float | None]:
    return [_round(v) for v in np.asarray(values, dtype=np.float64).tolist()]
