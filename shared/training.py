"""Fit the spec's sklearn pipeline deterministically and score it on a holdout split."""
from __future__ import annotations

import io
import platform
import time
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from skl2onnx.sklapi import CastTransformer
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from shared.errors import DataRejected
from shared.spec import TrainingSpec

# How a missing categorical value is spelled, in training and at scoring time. skl2onnx only
# converts a string imputer whose missing_values is a string (not None/NaN), so missing
# categoricals are mapped to this sentinel before the pipeline and the imputer keys on it.
CATEGORICAL_MISSING = "__missing__"

ESTIMATORS: dict[str, type] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "gradient_boosting": GradientBoostingClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "random_forest_regressor": RandomForestRegressor,
    "ridge": Ridge,
    "gradient_boosting_regressor": GradientBoostingRegressor,
    "hist_gradient_boosting_regressor": HistGradientBoostingRegressor,
}
# sklearn trees cast X to float32 before comparing with thresholds, and onnxruntime's
# TreeEnsemble* ops are float32 too. Making that cast an explicit pipeline step (after the
# float64 preprocessing) lets the ONNX graph do exactly what sklearn does: see onnx_export.
FLOAT32_TREE_MODELS = frozenset({
    "random_forest", "gradient_boosting", "hist_gradient_boosting", "random_forest_regressor",
    "gradient_boosting_regressor", "hist_gradient_boosting_regressor",
})


@dataclass(frozen=True)
class TrainResult:
    """A fitted pipeline with its holdout metrics and split facts."""

    pipeline: Pipeline
    metrics: dict[str, float]
    holdout: pd.DataFrame
    train_rows: int
    holdout_rows: int
    fit_seconds: float
    classes: list[Any] | None


def single_threaded() -> threadpool_limits:
    """Limit OpenMP/BLAS to one thread: on a busy 2-core worker HistGradientBoosting's OpenMP
    spin-waits made a 640-row fit take 10 s instead of 0.2 s. Results do not depend on it."""
    return threadpool_limits(limits=1)


def make_estimator(spec: TrainingSpec) -> Any:
    """The allow-listed estimator with the spec's params and random_state from split.seed."""
    estimator = ESTIMATORS[spec.estimator.type](**spec.estimator.params)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=spec.split.seed)
    return estimator


def build_pipeline(spec: TrainingSpec) -> Pipeline:
    """Unfitted Pipeline(ColumnTransformer(numeric, categorical), [float32 cast], estimator)."""
    numeric = [f.name for f in spec.features if f.kind == "numeric"]
    categorical = [f.name for f in spec.features if f.kind == "categorical"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
        ]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", missing_values=CATEGORICAL_MISSING,
                                     fill_value=CATEGORICAL_MISSING)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), categorical))
    steps: list[tuple[str, Any]] = [("preprocess", ColumnTransformer(transformers))]
    if spec.estimator.type in FLOAT32_TREE_MODELS:
        steps.append(("to_float32", CastTransformer(dtype=np.float32)))
    steps.append(("estimator", make_estimator(spec)))
    return Pipeline(steps)


def feature_frame(df: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """Model input: numeric float64 (NaN for missing), categorical str (sentinel for missing)."""
    columns: dict[str, Any] = {}
    for feat in spec.features:
        if feat.kind == "numeric":
            columns[feat.name] = pd.to_numeric(df[feat.name], errors="coerce").astype(np.float64)
        else:
            columns[feat.name] = pd.Series(_category_values(df[feat.name]), dtype=object,
                                           index=df.index)
    return pd.DataFrame(columns, index=df.index)


def _category_values(column: pd.Series) -> list[str]:
    return [CATEGORICAL_MISSING if v is None else v for v in category_strings(column)]


def category_strings(column: pd.Series) -> list[str | None]:
    """Categorical cells as strings, None for missing; 3.0 is spelled '3' like in a CSV."""
    out: list[str | None] = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append(None)
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)))
        else:
            out.append(str(value))
    return out


def target_array(df: pd.DataFrame, spec: TrainingSpec) -> np.ndarray:
    """Target as float64 (regression), int64 if all labels are integers, else str."""
    column = df[spec.target]
    if spec.task == "regression":
        return np.asarray(pd.to_numeric(column, errors="coerce"), dtype=np.float64)
    numeric = pd.to_numeric(column, errors="coerce")
    if column.dtype != bool and numeric.notna().all() and (numeric % 1 == 0).all():
        return np.asarray(numeric, dtype=np.int64)
    return np.array([str(v) for v in column.tolist()], dtype=object)


def train(df: pd.DataFrame, spec: TrainingSpec) -> TrainResult:
    """Split, fit and score on the holdout; deterministic for (data, spec).

    Raises:
        DataRejected: a stratified split is impossible (a class with fewer than 2 rows).
    """
    df = df.reset_index(drop=True)  # holdout rows are looked up by index below
    features = feature_frame(df, spec)
    y = target_array(df, spec)
    try:
        x_train, x_hold, y_train, y_hold = train_test_split(
            features, y, test_size=spec.split.holdout, random_state=spec.split.seed,
            stratify=y if spec.split.stratify else None,
        )
    except ValueError as exc:
        raise DataRejected(
            f"holdout split failed (model={spec.name}, holdout={spec.split.holdout}): {exc}; "
            "add rows for rare classes or set split.stratify=false",
            details={"status": "rejected", "rows": len(df), "columns": list(df.columns),
                     "problems": [{"column": spec.target, "check": "split",
                                   "message": str(exc), "count": None}]},
        ) from exc
    pipeline = build_pipeline(spec)
    with single_threaded():
        started = time.perf_counter()
        pipeline.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - started
        classes = pipeline.classes_.tolist() if spec.task == "classification" else None
        predictions = pipeline.predict(x_hold)
        proba = pipeline.predict_proba(x_hold) if classes is not None else None
    # Holdout rows as given (prepared form, None for a missing category), for parity and
    # champion/challenger scoring through ONNX.
    holdout = df.loc[x_hold.index, [*spec.feature_names, spec.target]].reset_index(drop=True)
    return TrainResult(
        pipeline=pipeline,
        metrics=compute_metrics(spec.task, y_hold, predictions, proba, classes),
        holdout=holdout,
        train_rows=len(x_train),
        holdout_rows=len(x_hold),
        fit_seconds=fit_seconds,
        classes=classes,
    )


def compute_metrics(task: str, y_true: Any, y_pred: Any, proba: Any,
                    classes: list[Any] | None) -> dict[str, float]:
    """Holdout metrics; a metric undefined on this holdout (e.g. one class only) is left out.

    Binary: the positive class is classes[1] (sklearn's sorted order: 1 for 0/1 labels).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if task == "regression":
        y_true = y_true.astype(np.float64)
        y_pred = y_pred.astype(np.float64).ravel()
        return {
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred)),
        }
    if classes is None or proba is None:
        raise ValueError("classification metrics need classes and probabilities")
    labels = list(classes)
    proba = np.asarray(proba, dtype=np.float64)
    # ONNX tree outputs are float32 sums whose rows miss 1.0 by ~1e-7; log_loss warns on that.
    proba = proba / proba.sum(axis=1, keepdims=True)
    binary = len(labels) == 2
    average: dict[str, Any] = (
        {"average": "binary", "pos_label": labels[1]} if binary
        else {"average": "macro", "labels": labels}
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0, **average)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0, **average)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0, **average)),
        "log_loss": float(log_loss(y_true, proba, labels=labels)),
    }
    if len(set(y_true.tolist())) == len(labels):
        # ROC AUC is rank-based: random-forest probabilities have exact ties (k / n_trees) that
        # float32 sums in ONNX break at ~1e-7, moving AUC by ~1e-3. Ranking at 1e-6 keeps the
        # ties, so sklearn and ONNX outputs score the same.
        ranked = np.round(proba, 6)
        if binary:
            metrics["roc_auc"] = float(roc_auc_score(y_true == labels[1], ranked[:, 1]))
        else:
            ranked = ranked / ranked.sum(axis=1, keepdims=True)
            metrics["roc_auc"] = float(roc_auc_score(y_true, ranked, multi_class="ovr",
                                                     average="macro", labels=labels))
    return metrics


def library_versions() -> dict[str, str]:
    """Versions that decide whether a retrain reproduces a model."""
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "sklearn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


def pipeline_to_bytes(pipeline: Pipeline) -> bytes:
    """Serialise OUR fitted pipeline for our own storage (joblib pickle)."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    return buffer.getvalue()


def pipeline_from_bytes(data: bytes) -> Pipeline:
    """Load a pipeline written by pipeline_to_bytes.

    Unpickling runs code: only call this on blobs this app wrote to its own storage. Nothing
    from users, webhooks or git is ever unpickled; they send specs and data, never models.
    """
    loaded = joblib.load(io.BytesIO(data))
    if not isinstance(loaded, Pipeline):
        raise TypeError(f"expected a sklearn Pipeline, got type={type(loaded).__name__}")
    return loaded
