"""Declarative training spec (YAML or JSON): parsing, validation, normalisation and hashing.

Nothing in a spec is ever executed: YAML is read with safe_load, the estimator is picked from an
allow-list and its params are checked against an allow-list of keyword names with scalar values.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from shared.errors import InvalidSpec

Task = Literal["classification", "regression"]
FeatureKind = Literal["numeric", "categorical"]
EstimatorType = Literal[
    "logistic_regression",
    "random_forest",
    "gradient_boosting",
    "hist_gradient_boosting",
    "random_forest_regressor",
    "ridge",
    "gradient_boosting_regressor",
    "hist_gradient_boosting_regressor",
]
JsonScalar = bool | int | float | str | None
AddProblem = Callable[[str, str], None]  # (field, message)

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
FEATURE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CLASSIFICATION_METRICS = ("accuracy", "roc_auc", "f1", "log_loss", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae", "r2")
HIGHER_IS_BETTER = frozenset({"accuracy", "roc_auc", "f1", "precision", "recall", "r2"})
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})

_TREE_PARAMS = ("max_depth", "min_samples_split", "min_samples_leaf", "max_features")
_HIST_PARAMS = (
    "max_iter", "learning_rate", "max_depth", "max_leaf_nodes", "min_samples_leaf",
    "l2_regularization", "early_stopping", "max_bins",
)
# estimator type -> (task, allowed keyword names). random_state is always ours (split.seed);
# n_jobs is left out so a spec cannot grab every core of a shared worker.
ESTIMATOR_PARAMS: dict[str, tuple[Task, tuple[str, ...]]] = {
    "logistic_regression": (
        "classification", ("C", "max_iter", "tol", "class_weight", "fit_intercept"),
    ),
    "random_forest": (
        "classification", ("n_estimators", "criterion", "bootstrap", "class_weight", *_TREE_PARAMS),
    ),
    "gradient_boosting": (
        "classification", ("n_estimators", "learning_rate", "subsample", *_TREE_PARAMS),
    ),
    "hist_gradient_boosting": ("classification", (*_HIST_PARAMS, "class_weight")),
    "random_forest_regressor": (
        "regression", ("n_estimators", "criterion", "bootstrap", *_TREE_PARAMS),
    ),
    "ridge": ("regression", ("alpha", "fit_intercept", "tol")),
    "gradient_boosting_regressor": (
        "regression", ("n_estimators", "learning_rate", "subsample", *_TREE_PARAMS),
    ),
    "hist_gradient_boosting_regressor": ("regression", _HIST_PARAMS),
}
# Upper bounds sklearn does not impose: a spec must not be able to tie up a worker for hours
# or produce an ONNX file too large to load.
PARAM_LIMITS = {"n_estimators": 1000, "max_iter": 10000, "max_depth": 64}


def _category_to_str(value: object) -> object:
    """Accept numbers as category names (YAML `[1, 2]`) but refuse YAML's yes/no booleans."""
    if isinstance(value, bool):
        raise ValueError("booleans are not category names; quote the value, e.g. 'yes'")
    if isinstance(value, int | float):
        return str(value)
    return value


Category = Annotated[str, BeforeValidator(_category_to_str)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Model):
    """One model input; its name becomes the ONNX input name."""

    name: str
    kind: FeatureKind
    allowed: list[Category] | None = None
    min: float | None = None
    max: float | None = None


class EstimatorSpec(_Model):
    """An allow-listed estimator and its scalar keyword params."""

    type: EstimatorType
    params: dict[str, JsonScalar] = Field(default_factory=dict)


class SplitSpec(_Model):
    """Holdout split; stratify None means 'true for classification' until normalised."""

    holdout: float = Field(default=0.2, gt=0.0, le=0.5)
    seed: int = 42
    stratify: bool | None = None


class Bound(_Model):
    """A quality bar for one metric: exactly one of min or max."""

    min: float | None = None
    max: float | None = None


class ComparisonRule(_Model):
    """Champion comparison for one metric: exactly one of min_improvement or max_regression."""

    min_improvement: float | None = Field(default=None, ge=0.0)
    max_regression: float | None = Field(default=None, ge=0.0)


class DataChecksSpec(_Model):
    """Dataset acceptance thresholds; categories and ranges come from the features."""

    min_rows: int = Field(default=50, ge=1)
    max_null_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    per_column: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)


class TrainingSpec(_Model):
    """One model's training spec, normalised (defaults filled in)."""

    name: str
    description: str | None = None
    task: Task
    target: str
    features: list[FeatureSpec] = Field(min_length=1)
    estimator: EstimatorSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    quality_bar: dict[str, Bound] = Field(default_factory=dict)
    comparison: dict[str, ComparisonRule] | None = None
    approval: Literal["auto", "manual"] = "auto"
    latency_budget_ms: float = Field(default=50.0, gt=0.0)
    data_checks: DataChecksSpec = Field(default_factory=DataChecksSpec)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in spec order (the ONNX input order)."""
        return [f.name for f in self.features]

    def null_limit(self, column: str) -> float:
        """Maximum null fraction allowed for one column."""
        return self.data_checks.per_column.get(column, self.data_checks.max_null_fraction)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; the input of spec_hash."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def metrics_for_task(task: str) -> tuple[str, ...]:
    """Metrics compute_metrics produces for a task."""
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def primary_metric(task: str, n_classes: int | None) -> str:
    """Default comparison metric: roc_auc (binary), accuracy (multiclass), rmse (regression)."""
    if task == "regression":
        return "rmse"
    return "accuracy" if n_classes is not None and n_classes > 2 else "roc_auc"


def comparison_rules(spec: TrainingSpec, n_classes: int | None) -> dict[str, ComparisonRule]:
    """The spec's comparison rules, or the default max_regression 0 on the primary metric."""
    if spec.comparison is not None:
        return dict(spec.comparison)
    return {primary_metric(spec.task, n_classes): ComparisonRule(max_regression=0.0)}


def spec_hash(spec: TrainingSpec) -> str:
    """sha256 hex of the canonical JSON of the normalised spec."""
    return hashlib.sha256(spec.to_json().encode("utf-8")).hexdigest()


def parse_spec(data: bytes | str, filename: str = "spec.yaml") -> TrainingSpec:
    """Parse, validate and normalise a YAML or JSON spec.

    Raises:
        InvalidSpec: details lists every problem as {"field", "message"}.
    """
    raw = _load(data, filename)
    try:
        spec = TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(root)", "message": err["msg"]}
            for err in exc.errors()
        ]
        raise _invalid(filename, details) from None
    problems = _semantic_problems(spec)
    if problems:
        raise _invalid(filename, problems)
    return _normalise(spec)


def _invalid(filename: str, details: list[dict[str, str]]) -> InvalidSpec:
    fields = ", ".join(d["field"] for d in details[:5])
    return InvalidSpec(
        f"training spec (file={filename}) is invalid: {len(details)} problem(s) in {fields}; "
        "fix them and resubmit",
        details=details,
    )


def _load(data: bytes | str, filename: str) -> Mapping[str, Any]:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = {"field": "(file)", "message": f"not UTF-8: {exc}"}
            raise _invalid(filename, [problem]) from None
    lower = filename.lower()
    try:
        if lower.endswith(".json"):
            raw = json.loads(data)
        elif lower.endswith((".yaml", ".yml")):
            raw = yaml.safe_load(data)  # safe_load: no tags, no object construction
        else:
            raise _invalid(filename, [{"field": "(file)",
                                       "message": "unknown extension; use .yaml, .yml or .json"}])
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise _invalid(filename, [{"field": "(file)", "message": f"cannot parse: {exc}"}]) from None
    if not isinstance(raw, dict):
        raise _invalid(filename, [{"field": "(root)",
                                   "message": f"expected a mapping, got {type(raw).__name__}"}])
    return raw


def _semantic_problems(spec: TrainingSpec) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []

    def add(field: str, message: str) -> None:
        problems.append({"field": field, "message": message})

    if not NAME_PATTERN.match(spec.name):
        add("name", f"name={spec.name!r} must be 1-63 chars of a-z, 0-9 and '-', "
                    "starting with a letter or digit")
    _feature_problems(spec, add)
    _estimator_problems(spec, add)
    if spec.task == "regression" and spec.split.stratify:
        add("split.stratify", "stratify=true needs class labels; set it false for regression")
    _metric_problems(spec, add)
    known = set(spec.feature_names) | {spec.target}
    for column in spec.data_checks.per_column:
        if column not in known:
            add(f"data_checks.per_column.{column}",
                f"column={column} is neither a feature nor the target")
    return problems


def _feature_problems(spec: TrainingSpec, add: AddProblem) -> None:
    seen: set[str] = set()
    for i, feat in enumerate(spec.features):
        at = f"features.{i}"
        if not FEATURE_PATTERN.match(feat.name):
            add(f"{at}.name", f"feature name={feat.name!r} must match {FEATURE_PATTERN.pattern} "
                              "(it becomes an ONNX input name)")
        if feat.name in seen:
            add(f"{at}.name", f"duplicate feature name={feat.name}")
        seen.add(feat.name)
        if feat.name == spec.target:
            add(f"{at}.name", f"feature name={feat.name} is also the target")
        _feature_value_problems(feat, at, add)


def _feature_value_problems(feat: FeatureSpec, at: str, add: AddProblem) -> None:
    """Problems with one feature's allowed categories or numeric range."""
    if feat.kind == "numeric" and feat.allowed is not None:
        add(f"{at}.allowed", "allowed categories only apply to kind=categorical")
    if feat.kind == "categorical" and (feat.min is not None or feat.max is not None):
        add(f"{at}.min", "min/max only apply to kind=numeric")
    if feat.min is not None and feat.max is not None and feat.min > feat.max:
        add(f"{at}.min", f"min={feat.min} is greater than max={feat.max}")
    if feat.allowed is not None and len(set(feat.allowed)) != len(feat.allowed):
        add(f"{at}.allowed", "allowed categories contain duplicates")
    if feat.allowed is not None and not feat.allowed:
        add(f"{at}.allowed", "allowed must list at least one category (or be omitted)")


def _estimator_problems(spec: TrainingSpec, add: AddProblem) -> None:
    est_task, allowed = ESTIMATOR_PARAMS[spec.estimator.type]
    if est_task != spec.task:
        fitting = sorted(k for k, (t, _) in ESTIMATOR_PARAMS.items() if t == spec.task)
        add("estimator.type", f"estimator={spec.estimator.type} is for {est_task}, but "
                              f"task={spec.task}; use one of: {', '.join(fitting)}")
        return
    bad = False
    for key, value in spec.estimator.params.items():
        problem = _param_problem(spec.estimator.type, allowed, key, value)
        if problem is not None:
            add(f"estimator.params.{key}", problem)
            bad = True
    if not bad:
        _sklearn_param_problems(spec, add)


def _param_problem(estimator: str, allowed: tuple[str, ...], key: str, value: JsonScalar) -> str | None:
    """What is wrong with one estimator keyword before sklearn sees it, or None."""
    if key == "random_state":
        return "random_state is set from split.seed; remove it"
    if key not in allowed:
        return f"unknown parameter (estimator={estimator}, param={key}); allowed: {', '.join(sorted(allowed))}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"param={key} must be finite"
    if (key in PARAM_LIMITS and isinstance(value, int | float)
            and not isinstance(value, bool) and value > PARAM_LIMITS[key]):
        return f"param={key} value={value} exceeds the limit {PARAM_LIMITS[key]}; lower it"
    return None


def _sklearn_param_problems(spec: TrainingSpec, add: AddProblem) -> None:
    """Let scikit-learn's own constraint table judge the values, before any data is touched.

    _validate_params is private but is what fit() calls first (stable since sklearn 1.2); the
    unit tests pin its behaviour, so an upgrade that changes it fails loudly.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    from shared.training import make_estimator  # local: training imports this module

    try:
        make_estimator(spec)._validate_params()
    except InvalidParameterError as exc:
        found = re.search(r"The '(\w+)' parameter", str(exc))
        field = f"estimator.params.{found.group(1)}" if found else "estimator.params"
        add(field, str(exc))


def _metric_problems(spec: TrainingSpec, add: AddProblem) -> None:
    _unknown_metric_problems(spec, add)
    for metric, bound in spec.quality_bar.items():
        problem = _bound_problem(metric, bound)
        if problem is not None:
            add(f"quality_bar.{metric}", problem)
    for metric, rule in (spec.comparison or {}).items():
        if (rule.min_improvement is None) == (rule.max_regression is None):
            add(f"comparison.{metric}", "give exactly one of min_improvement or max_regression")


def _unknown_metric_problems(spec: TrainingSpec, add: AddProblem) -> None:
    """Quality bars and comparison rules may only name metrics computed for the spec's task."""
    computed = metrics_for_task(spec.task)
    sections = (("quality_bar", spec.quality_bar), ("comparison", spec.comparison or {}))
    for section, rules in sections:
        for metric in rules:
            if metric not in computed:
                add(f"{section}.{metric}", f"metric={metric} is not computed for task={spec.task}; "
                                           f"use one of: {', '.join(computed)}")


def _bound_problem(metric: str, bound: Bound) -> str | None:
    """A quality bar needs exactly one bound, on the side where the metric gets worse."""
    if (bound.min is None) == (bound.max is None):
        return "give exactly one of min or max"
    if metric in HIGHER_IS_BETTER and bound.min is None:
        return f"{metric} is higher-is-better; use {{min: x}}"
    if metric in LOWER_IS_BETTER and bound.max is None:
        return f"{metric} is lower-is-better; use {{max: x}}"
    return None


def _normalise(spec: TrainingSpec) -> TrainingSpec:
    stratify = spec.split.stratify
    if stratify is None:
        stratify = spec.task == "classification"
    return spec.model_copy(update={"split": spec.split.model_copy(update={"stratify": stratify})})
