"""Declarative training spec (YAML or JSON): parsing, validation, normalisation and hashing.

Nothing in a spec is ever executed: YAML is read by a strict reader (plain values only: no tags,
anchors or aliases), the estimator is picked from an allow-list and its params are checked against
an allow-list of keyword names with scalar values.

No spec can tie up a worker either: a spec is at most MAX_SPEC_BYTES and is read in well under a
second; every numeric estimator param is bounded (PARAM_BOUNDS, chosen so the worst allowed spec
trains the bundled examples in seconds); feature, category and string counts are capped (MAX_*).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    ScalarEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from shared.errors import InvalidSpec, PayloadTooLarge
from shared.names import MODEL_NAME, MODEL_NAME_RULE

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

# How a missing categorical value is spelled, in training and at scoring time (and so in the prediction
# log). skl2onnx only converts a string imputer whose missing_values is a string (not None/NaN), so
# missing categoricals are mapped to this sentinel before the pipeline and the imputer keys on it.
CATEGORICAL_MISSING = "__missing__"

# Feature names become ONNX input names; fullmatch, because `$` would accept a trailing newline.
FEATURE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Size limits. A 2 MB YAML spec took 25-33 s of CPU in yaml.safe_load; a spec over MAX_SPEC_BYTES is
# refused before it is decoded, and the worst 256 KiB document is read and refused in under 0.25 s (_YamlReader).
MAX_SPEC_BYTES = 256 * 1024
MAX_NESTING = 16  # the deepest real spec nests 4 levels (root > features > feature > allowed)
MAX_FEATURES = 256
MAX_CATEGORIES = 1000  # allowed categories per feature
MAX_CATEGORY_CHARS = 200
MAX_COLUMN_CHARS = 128  # feature and target names
MAX_DESCRIPTION_CHARS = 2000
MAX_PARAM_CHARS = 64  # a string estimator param ("sqrt", "balanced", "log_loss", ...)
MAX_PARAMS = 32
MAX_SEED = 2**32 - 1  # numpy's and sklearn's random_state range
MAX_MIN_ROWS = 1_000_000_000
MAX_LATENCY_BUDGET_MS = 60_000.0
MAX_PROBLEMS = 50  # listed in InvalidSpec.details; the rest are counted


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


class ParamBound(NamedTuple):
    """Closed range [low, high] for a numeric estimator param; sklearn's own checks may narrow it."""

    low: float
    high: float


# Every numeric param in ESTIMATOR_PARAMS has bounds. The upper ones on work (trees, boosting
# rounds, tree size) are set so the worst allowed spec trains each bundled example in seconds on
# one core (tests/unit/test_spec.py trains it); the others keep values in a sane numeric range
# (no overflow, no degenerate model). sklearn still judges types and open ends (e.g. C > 0,
# min_samples_leaf an int >= 1 or a fraction < 1) in _sklearn_param_problems.
MAX_TREES = 300  # n_estimators; 300 full-depth trees fit the examples in 2-5 s
MAX_BOOSTING_ROUNDS = 300  # hist gradient boosting max_iter
PARAM_BOUNDS: dict[str, ParamBound] = {
    "n_estimators": ParamBound(1, MAX_TREES),
    "max_iter": ParamBound(1, 10_000),  # logistic regression solver steps; boosting below
    "max_depth": ParamBound(1, 64),
    "max_leaf_nodes": ParamBound(2, 256),
    "max_bins": ParamBound(2, 255),  # sklearn's own maximum (one byte per binned value)
    "min_samples_split": ParamBound(0, 1_000_000),  # int >= 2 or a fraction in (0, 1]
    "min_samples_leaf": ParamBound(0, 1_000_000),  # int >= 1 or a fraction in (0, 1)
    "max_features": ParamBound(0, 100_000),  # int >= 1 or a fraction in (0, 1]; also "sqrt", "log2"
    "C": ParamBound(1e-6, 1e6),
    "alpha": ParamBound(0, 1e6),
    "tol": ParamBound(0, 1),
    "learning_rate": ParamBound(0, 10),
    "subsample": ParamBound(0, 1),
    "l2_regularization": ParamBound(0, 1e6),
}
_ESTIMATOR_BOUNDS: dict[str, dict[str, ParamBound]] = {
    "hist_gradient_boosting": {"max_iter": ParamBound(1, MAX_BOOSTING_ROUNDS)},
    "hist_gradient_boosting_regressor": {"max_iter": ParamBound(1, MAX_BOOSTING_ROUNDS)},
}
# null would lift the bound: unlimited leaves per tree (the default, 31, is bounded).
NOT_NULL_PARAMS = frozenset({"max_leaf_nodes"})


def param_bounds(estimator: str) -> dict[str, ParamBound]:
    """The bounds of one estimator's numeric params."""
    overrides = _ESTIMATOR_BOUNDS.get(estimator, {})
    return {key: overrides.get(key, PARAM_BOUNDS[key])
            for key in ESTIMATOR_PARAMS[estimator][1] if key in PARAM_BOUNDS}


def _category_to_str(value: object) -> object:
    """Accept numbers as category names (YAML `[1, 2]`) but refuse YAML's yes/no booleans."""
    if isinstance(value, bool):
        raise ValueError("booleans are not category names; quote the value, e.g. 'yes'")
    if isinstance(value, int | float):
        return str(value)
    return value


Category = Annotated[str, BeforeValidator(_category_to_str), Field(max_length=MAX_CATEGORY_CHARS)]
ColumnName = Annotated[str, Field(min_length=1, max_length=MAX_COLUMN_CHARS)]


class _Model(BaseModel):
    # No inf/NaN anywhere: they serialise to null in JSON, so the stored spec would change meaning.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeatureSpec(_Model):
    """One model input; its name becomes the ONNX input name."""

    name: ColumnName
    kind: FeatureKind
    allowed: list[Category] | None = Field(default=None, max_length=MAX_CATEGORIES)
    min: float | None = None
    max: float | None = None
    # The column may be absent from scoring requests; its values are then missing and imputed.
    optional: bool = False

    @model_serializer(mode="wrap")
    def _drop_default_optional(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when False, so specs written before the field keep their canonical JSON and spec_hash.
        data: dict[str, Any] = handler(self)
        if not self.optional:
            data.pop("optional", None)
        return data


class EstimatorSpec(_Model):
    """An allow-listed estimator and its scalar keyword params."""

    # inf/NaN params get one clear message from _param_problem instead of one per union member.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)

    type: EstimatorType
    params: dict[str, JsonScalar] = Field(default_factory=dict, max_length=MAX_PARAMS)


class SplitSpec(_Model):
    """Holdout split; stratify None means 'true for classification' until normalised."""

    holdout: float = Field(default=0.2, gt=0.0, le=0.5)
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
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

    min_rows: int = Field(default=50, ge=1, le=MAX_MIN_ROWS)
    max_null_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    per_column: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)


class RetrainPolicy(_Model):
    """When monitoring may retrain on its own, and the guards against retraining storms."""

    enabled: bool = True
    drift_windows: int = Field(default=2, ge=1, le=24)  # dataset drift in at least this many ...
    of_windows: int = Field(default=3, ge=1, le=24)  # ... of the last this many windows
    min_labels: int = Field(default=200, ge=1, le=10_000_000)  # labels a live-metric trigger needs
    cooldown_hours: float = Field(default=24.0, ge=0.0, le=24.0 * 365)
    min_new_rows: int = Field(default=200, ge=0, le=10_000_000)  # new labelled rows since the last training
    max_per_day: int = Field(default=3, ge=0, le=48)

    @model_validator(mode="after")
    def _windows_fit(self) -> RetrainPolicy:
        if self.drift_windows > self.of_windows:
            raise ValueError(f"drift_windows ({self.drift_windows}) cannot exceed of_windows ({self.of_windows})")
        return self


class MonitoringSpec(_Model):
    """Drift and live-performance monitoring of the champion; defaults as documented in the README."""

    window_hours: float = Field(default=24.0, gt=0.0, le=24.0 * 31)
    min_rows: int = Field(default=200, ge=1, le=10_000_000)
    wasserstein_threshold: float = Field(default=0.1, gt=0.0, le=100.0)  # normalised by the reference std
    psi_threshold: float = Field(default=0.2, gt=0.0, le=100.0)
    jensen_shannon_threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)  # share of drifted features = dataset drift
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)


class TrainingSpec(_Model):
    """One model's training spec, normalised (defaults filled in)."""

    name: str
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    task: Task
    target: ColumnName
    features: list[FeatureSpec] = Field(min_length=1, max_length=MAX_FEATURES)
    estimator: EstimatorSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    quality_bar: dict[str, Bound] = Field(default_factory=dict)
    comparison: dict[str, ComparisonRule] | None = None
    approval: Literal["auto", "manual"] = "auto"
    latency_budget_ms: float = Field(default=50.0, gt=0.0, le=MAX_LATENCY_BUDGET_MS)
    data_checks: DataChecksSpec = Field(default_factory=DataChecksSpec)
    # Not part of spec_hash: changing a drift threshold must not make the same data train again.
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in spec order (the ONNX input order)."""
        return [f.name for f in self.features]

    def null_limit(self, column: str) -> float:
        """Maximum null fraction allowed for one column."""
        return self.data_checks.per_column.get(column, self.data_checks.max_null_fraction)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace (what is stored)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def training_json(self) -> str:
        """Canonical JSON of what decides the trained model (all but monitoring): the input of spec_hash."""
        return json.dumps(self.model_dump(mode="json", exclude={"monitoring"}), sort_keys=True,
                          separators=(",", ":"))


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
    """sha256 hex of the canonical JSON of the normalised spec, monitoring settings left out."""
    return hashlib.sha256(spec.training_json().encode("utf-8")).hexdigest()


def parse_spec(data: bytes | str, filename: str = "spec.yaml") -> TrainingSpec:
    """Parse, validate and normalise a YAML or JSON spec.

    Raises:
        PayloadTooLarge: the spec is over MAX_SPEC_BYTES (checked before it is read).
        InvalidSpec: details lists the problems as {"field", "message"} (at most MAX_PROBLEMS).
    """
    _check_size(data, filename)
    raw = _load(data, filename)
    try:
        spec = TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        details = [
            {"field": _short(".".join(str(p) for p in err["loc"]) or "(root)", 200), "message": err["msg"]}
            for err in exc.errors()
        ]
        raise _invalid(filename, details) from None
    problems = _semantic_problems(spec)
    if problems:
        raise _invalid(filename, problems)
    spec = _normalise(spec)
    _check_stored_size(spec, filename)
    return spec


def name_hint(data: bytes | str, filename: str = "spec.yaml") -> str | None:
    """The `name` of a spec that failed parse_spec (e.g. for its run record), read as safely as parse_spec
    reads it; None when it cannot be read or is not a valid model name."""
    try:
        _check_size(data, filename)
        name = _load(data, filename).get("name")
    except (InvalidSpec, PayloadTooLarge):
        return None
    return name if isinstance(name, str) and MODEL_NAME.fullmatch(name) else None


def _check_size(data: bytes | str, filename: str) -> None:
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise PayloadTooLarge(
            f"training spec (file={_short(filename)}) is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes "
            f"({MAX_SPEC_BYTES // 1024} KiB): shorten descriptions and category lists")


def _check_stored_size(spec: TrainingSpec, filename: str) -> None:
    """The spec as the registry stores and re-reads it (JSON, defaults filled in, non-ASCII escaped)."""
    size = len(json.dumps(spec.model_dump(mode="json")))
    if size > MAX_SPEC_BYTES:
        raise _invalid(filename, [{"field": "(file)", "message": (
            f"the normalised spec is {size} bytes as JSON (defaults filled in, non-ASCII escaped); the limit is "
            f"{MAX_SPEC_BYTES} bytes: shorten descriptions and category lists")}])


def _invalid(filename: str, details: list[dict[str, str]]) -> InvalidSpec:
    fields = ", ".join(_short(d["field"]) for d in details[:5])
    listed = details[:MAX_PROBLEMS]
    if len(details) > MAX_PROBLEMS:
        listed.append({"field": "(more)", "message": f"{len(details) - MAX_PROBLEMS} more problem(s) not listed"})
    return InvalidSpec(
        f"training spec (file={_short(filename)}) is invalid: {len(details)} problem(s) in {fields}; "
        "fix them and resubmit",
        details=listed,
    )


def _short(text: str, limit: int = 80) -> str:
    """Text cut to limit characters for a message (names and keys come from the caller)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: object) -> str:
    """A value for a message: repr'd (control characters visible) and cut short."""
    return _short(repr(value))


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
            raw = _YamlReader(data).read()
        else:
            raise _invalid(filename, [{"field": "(file)",
                                       "message": "unknown extension; use .yaml, .yml or .json"}])
    # ValueError: JSON syntax, numbers over 4300 digits, unencodable text; RecursionError: JSON nesting.
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        message = f"cannot parse: {_short(str(exc), 500)}"
        raise _invalid(filename, [{"field": "(file)", "message": message}]) from None
    if not isinstance(raw, dict):
        raise _invalid(filename, [{"field": "(root)",
                                   "message": f"expected a mapping, got {type(raw).__name__}"}])
    return raw


# -- the YAML reader ------------------------------------------------------------------------------


class _PyEventParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python event parser, used when PyYAML was built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


def _event_parser(text: str) -> Any:
    try:  # libyaml's parser is ~10x faster; both yield the same events
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        return _PyEventParser(text)
    return CParser(text)


class _PlainResolver(Resolver):
    """SafeLoader's implicit types except timestamps: a date in a spec is a category name or text."""


_PlainResolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_STR_TAG = "tag:yaml.org,2002:str"
_TYPED_SCALARS = {f"tag:yaml.org,2002:{kind}": SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{kind}"]
                  for kind in ("null", "bool", "int", "float")}
_NO_KEY = object()


class YamlRefused(yaml.YAMLError):
    """YAML a spec may not use: tags, anchors, aliases, complex keys or deep nesting."""


def _refused(problem: str, event: Event) -> YamlRefused:
    mark = event.start_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return YamlRefused(f"{problem}{where}")


class _Frame:
    """An open sequence or mapping while reading (key: the mapping key waiting for its value)."""

    def __init__(self, mapping: bool) -> None:
        self.value: list[Any] | dict[Any, Any] = {} if mapping else []
        self.key: Any = _NO_KEY

    def add(self, value: Any, event: Event) -> None:
        if isinstance(self.value, list):
            self.value.append(value)
        elif self.key is not _NO_KEY:
            self.value[self.key] = value  # a repeated key replaces the earlier value, as in yaml.safe_load
            self.key = _NO_KEY
        elif isinstance(value, list | dict):
            raise _refused("a mapping key must be a plain value, not a list or mapping", event)
        else:
            self.key = value


class _YamlReader:
    """Plain Python values from one YAML document, read from the event stream without recursion.

    yaml.safe_load expands aliases (a billion-laughs document), spends ~3 s building nodes for a
    256 KiB document, and libyaml's own composer recurses in C: a 200 KB document of nested '['
    crashed the process. This reader refuses tags, anchors and aliases, nests at most MAX_NESTING
    deep and resolves scalars as SafeLoader does (YAML 1.1: yes/no are booleans), but keeps dates
    as strings.
    """

    def __init__(self, text: str) -> None:
        self._events = _event_parser(text)
        self._resolver = _PlainResolver()
        self._constructor = SafeConstructor()
        self._scalars: dict[tuple[str, Any], Any] = {}  # repeated scalars are resolved once

    def read(self) -> Any:
        """The document's value (None for an empty one). Raises yaml.YAMLError."""
        try:
            self._events.get_event()  # StreamStartEvent
            if self._events.check_event(StreamEndEvent):
                return None
            self._events.get_event()  # DocumentStartEvent
            value = self._root()
            self._events.get_event()  # DocumentEndEvent
            if not self._events.check_event(StreamEndEvent):
                raise _refused("a spec is one YAML document; remove the second one", self._events.peek_event())
            return value
        finally:
            self._events.dispose()

    def _root(self) -> Any:
        stack: list[_Frame] = []
        while True:
            event = self._events.get_event()
            _refuse_decorations(event)
            if isinstance(event, CollectionStartEvent):
                if len(stack) >= MAX_NESTING:
                    raise _refused(f"nesting deeper than {MAX_NESTING} levels", event)
                stack.append(_Frame(isinstance(event, MappingStartEvent)))
                continue
            value = stack.pop().value if isinstance(event, CollectionEndEvent) else self._scalar(event)
            if not stack:
                return value
            stack[-1].add(value, event)

    def _scalar(self, event: Event) -> Any:
        if not isinstance(event, ScalarEvent):
            raise _refused(f"unexpected {type(event).__name__}", event)
        key = (event.value, event.implicit)
        if key not in self._scalars:
            self._scalars[key] = self._construct(event)
        return self._scalars[key]

    def _construct(self, event: ScalarEvent) -> Any:
        tag = self._resolver.resolve(ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            return event.value
        if tag not in _TYPED_SCALARS:  # '<<' (merge key) and '=' (value key)
            raise _refused(f"{_show(event.value)} has a special meaning in YAML; quote it", event)
        try:
            return _TYPED_SCALARS[tag](self._constructor, ScalarNode(tag, event.value))
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise _refused(f"cannot read {_show(event.value)} as a number: {exc}", event) from None


def _refuse_decorations(event: Event) -> None:
    """Tags build objects or change types; anchors and aliases multiply a document's size."""
    anchor = getattr(event, "anchor", None)
    if anchor is not None:
        sign = "*" if isinstance(event, AliasEvent) else "&"
        raise _refused(f"anchors and aliases ({sign}{_short(str(anchor), 40)}) are not allowed in a spec; "
                       "write the values out", event)
    tag = getattr(event, "tag", None)
    if tag is not None:
        raise _refused(f"tags ({_short(str(tag), 60)}) are not allowed in a spec; "
                       "quote the value if it is text", event)


def _semantic_problems(spec: TrainingSpec) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []

    def add(field: str, message: str) -> None:
        problems.append({"field": field, "message": message})

    if MODEL_NAME.fullmatch(spec.name) is None:
        add("name", f"name={_show(spec.name)} is not valid: use {MODEL_NAME_RULE}")
    _feature_problems(spec, add)
    _estimator_problems(spec, add)
    if spec.task == "regression" and spec.split.stratify:
        add("split.stratify", "stratify=true needs class labels; set it false for regression")
    _metric_problems(spec, add)
    known = set(spec.feature_names) | {spec.target}
    for column in spec.data_checks.per_column:
        if column not in known:
            add(f"data_checks.per_column.{_short(column)}",
                f"column={_show(column)} is neither a feature nor the target")
    return problems


def _feature_problems(spec: TrainingSpec, add: AddProblem) -> None:
    seen: set[str] = set()
    for i, feat in enumerate(spec.features):
        at = f"features.{i}"
        if FEATURE_PATTERN.fullmatch(feat.name) is None:
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
            add(f"estimator.params.{_short(key)}", problem)
            bad = True
    if not bad:
        _sklearn_param_problems(spec, add)


def _param_problem(estimator: str, allowed: tuple[str, ...], key: str, value: JsonScalar) -> str | None:
    """What is wrong with one estimator keyword before sklearn sees it, or None."""
    if key == "random_state":
        return "random_state is set from split.seed; remove it"
    if key not in allowed:
        return (f"unknown parameter (estimator={estimator}, param={_show(key)}); "
                f"allowed: {', '.join(sorted(allowed))}")
    if isinstance(value, float) and not math.isfinite(value):
        return f"param={key} must be finite"
    if isinstance(value, str) and len(value) > MAX_PARAM_CHARS:
        return f"param={key} value {_show(value)} is longer than {MAX_PARAM_CHARS} characters"
    bound = param_bounds(estimator).get(key)
    return None if bound is None else _bound_problem_of_param(estimator, key, value, bound)


def _bound_problem_of_param(estimator: str, key: str, value: JsonScalar, bound: ParamBound) -> str | None:
    """A numeric param outside its ParamBound, a boolean for it, or null where null lifts the bound."""
    if value is None:
        if key in NOT_NULL_PARAMS:
            return f"param={key} cannot be null (unlimited); give a number from {bound.low:g} to {bound.high:g}"
        return None
    if isinstance(value, bool):
        return f"param={key} must be a number, not a boolean"
    if isinstance(value, int | float) and not bound.low <= value <= bound.high:
        return (f"param={key} value={_show(value)} is outside the allowed range [{bound.low:g}, {bound.high:g}] "
                f"(estimator={estimator}); the bounds keep one training run from tying up a worker")
    return None  # strings ("sqrt", "auto") are judged by sklearn


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
            add(f"quality_bar.{_short(metric)}", problem)
    for metric, rule in (spec.comparison or {}).items():
        if (rule.min_improvement is None) == (rule.max_regression is None):
            add(f"comparison.{_short(metric)}", "give exactly one of min_improvement or max_regression")


def _unknown_metric_problems(spec: TrainingSpec, add: AddProblem) -> None:
    """Quality bars and comparison rules may only name metrics computed for the spec's task."""
    computed = metrics_for_task(spec.task)
    sections = (("quality_bar", spec.quality_bar), ("comparison", spec.comparison or {}))
    for section, rules in sections:
        for metric in rules:
            if metric not in computed:
                add(f"{section}.{_short(metric)}", f"metric={_show(metric)} is not computed for "
                                                   f"task={spec.task}; use one of: {', '.join(computed)}")


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
