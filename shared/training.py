"""Fit the spec's sklearn pipeline deterministically and score it on a holdout split."""
from __future__ import annotations

import io
import platform
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

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

from shared.errors import DataRejected, ModelRejected
from shared.spec import CATEGORICAL_MISSING, FeatureKind, TrainingSpec

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
# What sklearn raises when the numbers themselves make a fit or prediction impossible; every
# retry would raise it again, so it becomes a ModelRejected (LinAlgError is a ValueError too).
SKLEARN_NUMERIC_ERRORS = (ValueError, FloatingPointError, np.linalg.LinAlgError)


class ModelProblem(TypedDict):
    """One reason a model was rejected; the same keys as a data_checks Problem."""

    column: str | None
    check: str
    message: str
    count: int | None


class ModelReport(TypedDict):
    """ModelRejected.details: shaped like a data rejection report, plus the stage."""

    status: Literal["rejected"]
    stage: str
    rows: int
    columns: list[str]
    problems: list[ModelProblem]


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


def prepared_column(column: pd.Series, kind: FeatureKind) -> pd.Series:
    """One feature as prepare() stores it: numeric float64 (NaN if missing), categorical object str/None.

    Unparseable numbers become NaN as at scoring time; prepare() has already refused them.
    """
    if kind == "numeric":
        values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        return pd.Series(values, dtype=np.float64)
    return pd.Series(category_strings(column), dtype=object)


def prepared_frame(df: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """The spec's features (prepared_column) then its target (target_array), on a fresh RangeIndex."""
    columns: dict[str, Any] = {f.name: prepared_column(df[f.name], f.kind) for f in spec.features}
    columns[spec.target] = target_array(df, spec)
    frame = pd.DataFrame(columns)
    for feat in spec.features:  # pandas may infer a str dtype; we promise object + None
        if feat.kind == "categorical":
            frame[feat.name] = columns[feat.name]
    return frame


def frame_for_spec(df: pd.DataFrame, spec: TrainingSpec) -> tuple[pd.DataFrame | None, list[str]]:
    """df (e.g. a holdout made for another spec) in the prepared form spec expects, or (None, absent columns)."""
    missing = [c for c in [*spec.feature_names, spec.target] if c not in df.columns]
    if missing:
        return None, missing
    return prepared_frame(df, spec), []


def rows_not_trained_on(frame: pd.DataFrame, data: pd.DataFrame, holdout: pd.DataFrame,
                        columns: list[str]) -> pd.Series:
    """Mask of frame's rows that are not training rows of a model fit on `data` minus `holdout`.

    A retrain on the current data plus new rows splits anew, so its holdout holds rows the champion
    trained on; scoring the champion on those would flatter it. Rows are compared by content.
    """
    def keys(df: pd.DataFrame) -> pd.Series:
        cells = {c: (pd.to_numeric(df[c], errors="coerce").astype("float64") if df[c].dtype.kind in "biuf"
                     else df[c].astype("string")) for c in columns}
        return pd.util.hash_pandas_object(pd.DataFrame(cells), index=False)

    trained = set(keys(data)) - set(keys(holdout))
    return ~keys(frame).isin(trained).set_axis(frame.index)


def model_rejected(stage: str, subject: str, rows: int, columns: list[str],
                   problems: list[ModelProblem]) -> ModelRejected:
    """A ModelRejected whose details is a ModelReport; the message leads with the first problem."""
    report: ModelReport = {"status": "rejected", "stage": stage, "rows": rows, "columns": columns,
                           "problems": problems}
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ModelRejected(f"{stage} rejected ({subject}): {problems[0]['message']}{more}; see details",
                         details=report)


@dataclass(frozen=True)
class _Context:
    """What a training rejection names: the spec and the frame it was trained on."""

    spec: TrainingSpec
    rows: int
    columns: list[str]

    def reject(self, problems: list[ModelProblem]) -> ModelRejected:
        subject = f"model={self.spec.name}, estimator={self.spec.estimator.type}"
        return model_rejected("train", subject, self.rows, self.columns, problems)


@contextmanager
def quiet_numerics() -> Iterator[None]:
    """Silence numpy overflow/invalid warnings: callers check results for non-finite values instead."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@contextmanager
def _sklearn_errors(ctx: _Context, doing: str) -> Iterator[None]:
    """Turn the numeric errors sklearn raises while `doing` into a fit_failed rejection."""
    try:
        yield
    except SKLEARN_NUMERIC_ERRORS as exc:
        raise ctx.reject([{
            "column": None, "check": "fit_failed", "count": None,
            "message": f"sklearn failed while {doing} (estimator={ctx.spec.estimator.type}): "
                       f"{type(exc).__name__}: {exc}; fix the data or the estimator params in the spec",
        }]) from exc


def train(df: pd.DataFrame, spec: TrainingSpec, extra: pd.DataFrame | None = None) -> TrainResult:
    """Split, fit and score on the holdout; deterministic for (data, spec).

    extra: source columns outside the spec, row-aligned with df; the holdout carries them after
    the spec's columns so a champion with another feature set can be scored on the same rows.

    Raises:
        DataRejected: a stratified split is impossible (a class with fewer than 2 rows).
        ModelRejected: the data cannot be trained on (details is a ModelReport; checks
            non_finite_after_preprocessing, single_class, fit_failed, non_finite_output).
    """
    df = df.reset_index(drop=True)  # holdout rows are looked up by position below
    extra = _aligned_extra(df, spec, extra)
    ctx = _Context(spec, len(df), [str(c) for c in df.columns])
    features = feature_frame(df, spec)
    y = target_array(df, spec)
    x_train, x_hold, y_train, y_hold = _split(features, y, spec, ctx)
    if spec.task == "classification":
        _require_two_classes(y_train, y, spec, ctx)
    pipeline = build_pipeline(spec)
    fitted = _fit_and_predict(pipeline, x_train, y_train, x_hold, ctx)
    classes = pipeline.classes_.tolist() if spec.task == "classification" else None
    with quiet_numerics(), _sklearn_errors(ctx, "scoring the holdout"):
        metrics = compute_metrics(spec.task, y_hold, fitted.predictions, fitted.proba, classes)
    _check_finite_metrics(metrics, fitted, ctx)
    # Holdout rows as given (prepared form, None for a missing category), for parity and
    # champion/challenger scoring through ONNX; raw extra columns follow for other specs.
    rows = x_hold.index.to_numpy()
    holdout = pd.concat([df.loc[rows, [*spec.feature_names, spec.target]].reset_index(drop=True),
                         extra.iloc[rows].reset_index(drop=True)], axis=1)
    return TrainResult(
        pipeline=pipeline,
        metrics=metrics,
        holdout=holdout,
        train_rows=len(x_train),
        holdout_rows=len(x_hold),
        fit_seconds=fitted.fit_seconds,
        classes=classes,
    )


class _Fitted(NamedTuple):
    """What the checks after fitting need: holdout outputs and the matrix that produced them."""

    fit_seconds: float
    predictions: np.ndarray
    proba: np.ndarray | None
    hold_matrix: np.ndarray
    sources: list[str | None]


def _aligned_extra(df: pd.DataFrame, spec: TrainingSpec, extra: pd.DataFrame | None) -> pd.DataFrame:
    if extra is None:
        return pd.DataFrame(index=df.index)
    if len(extra) != len(df):
        raise ValueError(f"extra has rows={len(extra)} but the training frame has rows={len(df)}; "
                         "pass PreparedData.extra with its frame")
    clash = sorted(set(map(str, extra.columns)) & {*spec.feature_names, spec.target})
    if clash:
        raise ValueError(f"extra columns={clash} are spec columns; pass only columns outside the spec")
    return extra.reset_index(drop=True)


def _split(features: pd.DataFrame, y: np.ndarray, spec: TrainingSpec, ctx: _Context) -> list[Any]:
    try:
        return list(train_test_split(features, y, test_size=spec.split.holdout,
                                     random_state=spec.split.seed,
                                     stratify=y if spec.split.stratify else None))
    except ValueError as exc:
        raise DataRejected(
            f"holdout split failed (model={spec.name}, holdout={spec.split.holdout}): {exc}; "
            "add rows for rare classes or set split.stratify=false",
            details={"status": "rejected", "stage": "train", "rows": ctx.rows, "columns": ctx.columns,
                     "problems": [{"column": spec.target, "check": "split",
                                   "message": str(exc), "count": None}]},
        ) from exc


def _require_two_classes(y_train: np.ndarray, y: np.ndarray, spec: TrainingSpec, ctx: _Context) -> None:
    present = pd.unique(pd.Series(y_train)).tolist()
    if len(present) >= 2:
        return
    raise ctx.reject([{
        "column": spec.target, "check": "single_class", "count": len(present),
        "message": f"the training split of target column={spec.target} has only class {present} of "
                   f"{len(pd.unique(pd.Series(y)))} (holdout={spec.split.holdout}, "
                   f"stratify={spec.split.stratify}); add rows of the other classes or set "
                   "split.stratify=true",
    }])


def _fit_and_predict(pipeline: Pipeline, x_train: pd.DataFrame, y_train: np.ndarray, x_hold: pd.DataFrame,
                     ctx: _Context) -> _Fitted:
    """Fit preprocessing and estimator separately so the matrix between them can be checked.

    Same steps as pipeline.fit / predict (Pipeline slices share the fitted step objects).
    """
    preprocess, estimator = pipeline[:-1], pipeline[-1]
    with single_threaded(), quiet_numerics():
        with _sklearn_errors(ctx, "fitting"):
            started = time.perf_counter()
            train_matrix = np.asarray(preprocess.fit_transform(x_train, y_train))
            sources = _source_columns(pipeline)
            _check_finite_matrix(train_matrix, sources, "training", ctx)
            estimator.fit(train_matrix, y_train)
            fit_seconds = time.perf_counter() - started
        with _sklearn_errors(ctx, "predicting the holdout"):
            hold_matrix = np.asarray(preprocess.transform(x_hold))
            _check_finite_matrix(hold_matrix, sources, "holdout", ctx)
            predictions = np.asarray(estimator.predict(hold_matrix))
            proba = (np.asarray(estimator.predict_proba(hold_matrix))
                     if ctx.spec.task == "classification" else None)
    outputs = proba if proba is not None else predictions.astype(np.float64).reshape(len(predictions), -1)
    bad_rows = np.asarray(~np.isfinite(outputs).all(axis=1), dtype=bool)
    if bad_rows.any():
        what = "inf/NaN probabilities" if proba is not None else "inf/NaN predictions"
        raise ctx.reject([_output_problem(column, count, what)
                          for column, count in _driving_columns(hold_matrix, bad_rows, sources)])
    return _Fitted(fit_seconds, predictions, proba, hold_matrix, sources)


def _source_columns(pipeline: Pipeline) -> list[str | None]:
    """The spec feature behind each column of the preprocessed matrix (None if unknown)."""
    preprocess: ColumnTransformer = pipeline.named_steps["preprocess"]
    sources: list[str | None] = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "remainder":
            continue
        encoder = transformer[-1]
        # The median imputer drops an all-NaN column, so read the names it kept.
        inputs = list(transformer[:-1].get_feature_names_out(columns))
        if isinstance(encoder, OneHotEncoder):
            sources.extend(c for c, cats in zip(inputs, encoder.categories_, strict=True) for _ in cats)
        else:
            sources.extend(inputs)  # the scaler keeps one column per input
    return sources


def _column_of(sources: list[str | None], index: int) -> str | None:
    return sources[index] if index < len(sources) else None


def _check_finite_matrix(matrix: np.ndarray, sources: list[str | None], split: str, ctx: _Context) -> None:
    finite = np.isfinite(matrix)
    if finite.all():
        return
    problems: list[ModelProblem] = []
    by_column: dict[str | None, np.ndarray] = {}
    for index in np.flatnonzero(~finite.all(axis=0)):
        column = _column_of(sources, int(index))
        rows = ~finite[:, index]
        by_column[column] = by_column[column] | rows if column in by_column else rows
    cast = ", float32 cast" if ctx.spec.estimator.type in FLOAT32_TREE_MODELS else ""
    for column, rows in by_column.items():
        problems.append({
            "column": column, "check": "non_finite_after_preprocessing", "count": int(rows.sum()),
            "message": f"{int(rows.sum())} {split} row(s) of column={column} are inf/NaN after "
                       f"preprocessing (median imputation, standard scaling{cast}): values too large "
                       f"to scale (e.g. near 1e308); rescale column={column} (e.g. other units), set "
                       "min/max for it in the spec, or remove the outliers",
        })
    raise ctx.reject(problems)


def _driving_columns(matrix: np.ndarray, rows: np.ndarray, sources: list[str | None]) -> list[tuple[str | None, int]]:
    """For the given rows, the feature with the largest |preprocessed value|, with row counts."""
    counts: dict[str | None, int] = {}
    if matrix.ndim == 2 and matrix.shape[1]:
        for index in np.abs(matrix[rows]).argmax(axis=1):
            column = _column_of(sources, int(index))
            counts[column] = counts.get(column, 0) + 1
    return list(counts.items()) or [(None, int(rows.sum()))]


def _output_problem(column: str | None, count: int, what: str) -> ModelProblem:
    return {
        "column": column, "check": "non_finite_output", "count": count,
        "message": f"{count} holdout row(s) give {what}; their largest scaled input is column={column}: "
                   "values far outside the training range overflow the model; set min/max for "
                   f"column={column} in the spec or remove the outliers",
    }


def _check_finite_metrics(metrics: dict[str, float], fitted: _Fitted, ctx: _Context) -> None:
    """A metric is inf/NaN when a squared error overflows: blame the inputs if predictions are huge."""
    bad = sorted(name for name, value in metrics.items() if not np.isfinite(value))
    if not bad:
        return
    if fitted.proba is None:
        with quiet_numerics():
            predictions = fitted.predictions.astype(np.float64).ravel()
            huge = ~np.isfinite(np.square(predictions))
        if huge.any():
            raise ctx.reject([_output_problem(column, count, f"predictions too large for metrics={bad}")
                              for column, count in _driving_columns(fitted.hold_matrix, huge, fitted.sources)])
    target = ctx.spec.target
    cause = ("target values too large to square; rescale the target (e.g. other units) or remove the outliers"
             if fitted.proba is None else "check the holdout rows of the target and the class labels")
    raise ctx.reject([{
        "column": target, "check": "non_finite_output", "count": len(bad),
        "message": f"holdout metrics={bad} are inf/NaN for target column={target}: {cause}",
    }])


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
