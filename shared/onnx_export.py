"""Convert a fitted pipeline to ONNX, describe it, run it, and check parity with sklearn.

Contract for scoring: one input per feature named like the feature, shape [None, 1], double for
numeric and string for categorical (a missing category is the signature's categorical_missing
string; a missing number is NaN). Classifiers output "label" [N] and "probabilities"
[N, n_classes] in the order of signature.classes (no ZipMap), and most also "label_index" [N, 1], the position
of each row's label in signature.classes (shared.onnx_rewrite.label_index); regressors output "variable" [N, 1].
The signature is JSON in metadata_props["mlops.signature"]; a linear model whose inputs are all numbers also
carries, base64 under "mlops.packed", a companion graph with the same outputs from one [F, N] input for rows
with no missing value (shared.onnx_rewrite.packed), which scoring runs for such rows. Any ONNX runtime can ignore
it: the model's own graph and inputs are the contract.

Precision: preprocessing runs in float64 exactly as sklearn does (skl2onnx emits Sub/Div for a
double StandardScaler; the numeric imputer is our Where(IsNaN) converter because onnxruntime's
Imputer op has no double kernel). Tree models then get an explicit float32 Cast, which is what
sklearn trees do internally, and thresholds are rounded so that float32 comparisons match
sklearn's; onnxruntime's TreeEnsemble* ops only compute in float32, so tree outputs are float32
(~1e-7 from sklearn). Linear models stay float64 end to end.

HistGradientBoosting* with skl2onnx 1.20: its converter puts Python bools into an int attribute
(nodes_missing_value_tracks_true), which protobuf >= 5 rejects ("Expected an int, got a
boolean" surfacing as a TreeEnsembleClassifier node error), and it rounds double thresholds to
the nearest float32 instead of down. _HistTreeContainer fixes both on the way into the graph.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
from skl2onnx.operator_converters.common import concatenate_variables
from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
from skl2onnx.operator_converters.random_forest import (
    convert_sklearn_random_forest_classifier,
    convert_sklearn_random_forest_regressor_converter,
)
from skl2onnx.proto import onnx_proto
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from shared import onnx_rewrite
from shared.errors import ModelRejected, PipelineError
from shared.scoring import LABEL_INDEX, PACKED_INPUT, PACKED_KEY
from shared.spec import TrainingSpec, spec_hash
from shared.training import CATEGORICAL_MISSING, feature_frame, model_rejected, single_threaded

SIGNATURE_KEY = "mlops.signature"
SPEC_HASH_KEY = "mlops.spec_hash"
REWRITES_KEY = "mlops.rewrites"  # shared.onnx_rewrite's rewrites applied to skl2onnx's graph, comma-separated
# A rewritten graph must give the original's outputs on the sample rows (and on them with every number missing)
# to this relative tolerance; it changes nothing but rounding (~1e-15).
REWRITE_TOLERANCE = 1e-9
# The packed companion graph (shared.onnx_rewrite.packed) is embedded, base64, in the model's metadata up to this
# size; a linear model's is its weights and a few nodes (~3 KB for breast-cancer's 30 inputs).
PACKED_MAX_BYTES = 256 * 1024
# Pinned so the same pipeline gives the same graph whatever onnx version is installed; opset 18
# runs on onnxruntime >= 1.14. ai.onnx.ml 3 is the newest the skl2onnx tree converters target.
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
DEFAULT_MAX_ABS_DIFF = 1e-5
DEFAULT_MIN_LABEL_AGREEMENT = 1.0
_TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX graph reproduces the sklearn pipeline on the holdout."""

    task: str
    rows: int
    max_abs_diff: float
    max_rel_diff: float | None
    label_agreement: float | None
    near_tie_disagreements: int
    n_classes: int | None
    threshold: float
    min_label_agreement: float
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReport:
        """Rebuild a report stored with to_dict()."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def export_onnx(pipeline: Pipeline, spec: TrainingSpec, sample_df: pd.DataFrame) -> bytes:
    """Convert the fitted pipeline, embed the signature, and smoke-run it on sample_df.

    Raises:
        ModelRejected: skl2onnx refused the pipeline or the graph does not run on sample_df (stage
            "export", check "onnx_conversion"); every retry would fail the same way.
    """
    initial_types = [
        (f.name, DoubleTensorType([None, 1]) if f.kind == "numeric"
         else StringTensorType([None, 1]))
        for f in spec.features
    ]
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if spec.task == "classification" else None
    try:
        model = convert_sklearn(
            pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET,
            custom_conversion_functions={
                SimpleImputer: _convert_imputer,
                HistGradientBoostingClassifier: _convert_hist_classifier,
                HistGradientBoostingRegressor: _convert_hist_regressor,
            },
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, TypeError, NotImplementedError, ...
        raise _export_rejected(spec, sample_df, f"skl2onnx cannot convert the pipeline "
                               f"(estimator={spec.estimator.type}): {type(exc).__name__}: {exc}; "
                               "use an allow-listed estimator or report the converter error") from exc
    classes = list(getattr(estimator, "classes_", [])) if spec.task == "classification" else None
    signature = build_signature(spec, classes)
    model, rewrites = _rewritten(model, sample_df, spec, signature.get("classes"))
    props = {SIGNATURE_KEY: json.dumps(signature, sort_keys=True), SPEC_HASH_KEY: spec_hash(spec)}
    packed = _packed(model, sample_df, spec) if "feature_major" in rewrites else None
    if packed is not None:
        props[PACKED_KEY] = base64.b64encode(packed).decode("ascii")
        rewrites.append("packed")
    onnx.helper.set_model_props(model, {**props, REWRITES_KEY: ",".join(rewrites)})
    model.graph.name = spec.name  # skl2onnx names the graph with a random uuid
    model.doc_string = f"{spec.name}: {spec.task} on {spec.target} ({spec.estimator.type})"
    data: bytes = model.SerializeToString()
    _smoke_run(data, sample_df, spec)
    return data


def build_signature(spec: TrainingSpec, classes: list[Any] | None) -> dict[str, Any]:
    """The JSON signature embedded under metadata_props["mlops.signature"]."""
    signature: dict[str, Any] = {
        "name": spec.name,
        "task": spec.task,
        "target": spec.target,
        # "optional" only when set: a reader takes a missing flag as "the column must be sent".
        "features": [{"name": f.name, "kind": f.kind, **({"optional": True} if f.optional else {})}
                     for f in spec.features],
        "categorical_missing": CATEGORICAL_MISSING,
        "input_types": {f.name: "double" if f.kind == "numeric" else "string"
                        for f in spec.features},
        "outputs": ["label", "probabilities"] if spec.task == "classification" else ["variable"],
    }
    if classes is not None:
        signature["classes"] = [c.item() if isinstance(c, np.generic) else c for c in classes]
    return signature


def read_signature(onnx_bytes: bytes) -> dict[str, Any]:
    """The signature stored by export_onnx."""
    model = onnx.load_from_string(onnx_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    if SIGNATURE_KEY not in props:
        raise PipelineError(f"ONNX model has no metadata_props key={SIGNATURE_KEY}; "
                            "re-export it with export_onnx")
    return dict(json.loads(props[SIGNATURE_KEY]))


def onnx_facts(onnx_bytes: bytes) -> dict[str, Any]:
    """sha256, size and opsets ({"ai.onnx": 18, "ai.onnx.ml": 2}) of a serialised model."""
    model = onnx.load_from_string(onnx_bytes)
    return {
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "size_bytes": len(onnx_bytes),
        "opset": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
    }


def make_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """A single-threaded CPU session: what one Functions worker gives a request."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=options,
                                providers=["CPUExecutionProvider"])


def onnx_inputs(session: ort.InferenceSession, df: pd.DataFrame,
                spec: TrainingSpec) -> dict[str, np.ndarray]:
    """Per-input [N, 1] arrays built from the DataFrame columns."""
    frame = feature_frame(df, spec)
    feeds: dict[str, np.ndarray] = {}
    for node in session.get_inputs():
        column = frame[node.name]
        if node.type == "tensor(string)":
            feeds[node.name] = column.to_numpy(object).reshape(-1, 1)
        elif node.type == "tensor(float)":
            feeds[node.name] = column.to_numpy(np.float32).reshape(-1, 1)
        else:
            feeds[node.name] = column.to_numpy(np.float64).reshape(-1, 1)
    return feeds


def run_onnx(model: bytes | ort.InferenceSession, df: pd.DataFrame,
             spec: TrainingSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, probabilities [N, k] float64) for classifiers, (predictions [N], None) else."""
    session = make_session(model) if isinstance(model, bytes) else model
    outputs = session.run(None, onnx_inputs(session, df, spec))
    if spec.task == "classification":
        return np.asarray(outputs[0]).ravel(), np.asarray(outputs[1], dtype=np.float64)
    return np.asarray(outputs[0], dtype=np.float64).ravel(), None


def parity_check(pipeline: Pipeline, onnx_bytes: bytes, holdout_df: pd.DataFrame,
                 spec: TrainingSpec, max_abs_diff: float = DEFAULT_MAX_ABS_DIFF,
                 min_label_agreement: float = DEFAULT_MIN_LABEL_AGREEMENT) -> ParityReport:
    """Compare ONNX and sklearn outputs row by row on the holdout.

    Classification gates the max |probability diff| and label agreement; a disagreement where
    sklearn's top two probabilities are within max_abs_diff is a tie broken differently by
    float32 rounding, counted in near_tie_disagreements but not failed. Regression gates
    max |diff| / max(1, max |prediction|): tree regressors output float32, so the absolute
    error grows with the target's scale (~1e-7 relative) and a relative gate is scale-free.
    """
    features = feature_frame(holdout_df, spec)
    labels, proba = run_onnx(onnx_bytes, holdout_df, spec)
    rows = len(features)
    if spec.task == "regression":
        with single_threaded():
            expected = np.asarray(pipeline.predict(features), dtype=np.float64).ravel()
        abs_diff = float(np.max(np.abs(expected - labels))) if rows else 0.0
        scale = max(1.0, float(np.max(np.abs(expected)))) if rows else 1.0
        rel_diff = abs_diff / scale
        passed = rel_diff <= max_abs_diff
        verdict = "passed" if passed else "rejected"
        op = "<=" if passed else ">"
        reasons = [f"{verdict}: parity max relative prediction diff {rel_diff:.3g} {op} "
                   f"{max_abs_diff:g} (max abs diff {abs_diff:.3g}, rows={rows})"]
        return ParityReport(spec.task, rows, abs_diff, rel_diff, None, 0, None, max_abs_diff,
                            min_label_agreement, passed, reasons)
    assert proba is not None
    with single_threaded():
        expected_proba = pipeline.predict_proba(features)
        expected_labels = pipeline.predict(features)
    abs_diff = float(np.max(np.abs(expected_proba - proba))) if rows else 0.0
    pairs = zip(expected_labels, labels, strict=True)
    disagree = np.asarray([str(a) != str(b) for a, b in pairs], dtype=bool)
    top_two = np.sort(expected_proba, axis=1)[:, -2:] if rows else np.zeros((0, 2))
    near_tie = (top_two[:, 1] - top_two[:, 0]) <= max_abs_diff
    ties = int(np.sum(disagree & near_tie))
    agreement = 1.0 - float(np.mean(disagree)) if rows else 1.0
    gated_agreement = 1.0 - float(np.sum(disagree & ~near_tie)) / rows if rows else 1.0
    prob_ok = abs_diff <= max_abs_diff
    label_ok = gated_agreement >= min_label_agreement
    reasons = [
        f"{'passed' if prob_ok else 'rejected'}: parity max probability diff {abs_diff:.3g} "
        f"{'<=' if prob_ok else '>'} {max_abs_diff:g} (rows={rows})",
        f"{'passed' if label_ok else 'rejected'}: parity label agreement {agreement:.4f} "
        f"({ties} near-tie disagreement(s) excused) {'>=' if label_ok else '<'} "
        f"{min_label_agreement:g}",
    ]
    return ParityReport(spec.task, rows, abs_diff, None, agreement, ties,
                        int(expected_proba.shape[1]), max_abs_diff, min_label_agreement,
                        prob_ok and label_ok, reasons)


def measure_latency(onnx_bytes: bytes, row_df: pd.DataFrame, spec: TrainingSpec,
                    runs: int = 200) -> dict[str, float]:
    """Single-row session.run latency in ms (p50, p99) on one thread, after 10 warm-up runs."""
    session = make_session(onnx_bytes)
    feeds = onnx_inputs(session, row_df.head(1), spec)
    for _ in range(10):
        session.run(None, feeds)
    timings = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        started = time.perf_counter_ns()
        session.run(None, feeds)
        timings[i] = (time.perf_counter_ns() - started) / 1e6
    return {"p50_ms": float(np.percentile(timings, 50)),
            "p99_ms": float(np.percentile(timings, 99))}


def _smoke_run(onnx_bytes: bytes, sample_df: pd.DataFrame, spec: TrainingSpec) -> None:
    try:
        session = make_session(onnx_bytes)
        names = [o.name for o in session.get_outputs()]
        expected = ["label", "probabilities"] if spec.task == "classification" else ["variable"]
        if names not in (expected, [*expected, LABEL_INDEX]):
            raise ValueError(f"outputs={names}, expected {expected} for task={spec.task}")
        run_onnx(session, sample_df.head(5), spec)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise _export_rejected(spec, sample_df, f"the converted ONNX graph does not run on the sample "
                               f"rows: {type(exc).__name__}: {exc}; check that the pipeline was "
                               "trained with this spec") from exc


def _rewritten(
    model: onnx.ModelProto, sample_df: pd.DataFrame, spec: TrainingSpec, classes: list[Any] | None,
) -> tuple[onnx.ModelProto, list[str]]:
    """skl2onnx's graph with shared.onnx_rewrite's rewrites, if they give the same outputs on the sample rows and on
    those rows with every numeric input missing (and the signature's classes at the label index are the labels);
    else the graph as converted (nothing applied)."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    applied: list[str] = []
    try:
        applied = onnx_rewrite.rewrite(rewritten)
        if not applied:
            return model, []
        onnx.checker.check_model(rewritten)
        missing = sample_df.head(5).copy()
        missing[[f.name for f in spec.features if f.kind == "numeric"]] = np.nan
        before, after = make_session(model.SerializeToString()), make_session(rewritten.SerializeToString())
        for rows in (sample_df.head(5), missing):
            _check_same_outputs(run_onnx(before, rows, spec), run_onnx(after, rows, spec))
            if LABEL_INDEX in applied:
                _check_label_index(after, rows, spec, classes)
    except Exception as exc:  # a rewrite is an optimisation: the converted graph is always a correct answer
        log.warning("ONNX rewrites %s not applied (model=%s): %s: %s", applied, spec.name, type(exc).__name__, exc)
        return model, []
    return rewritten, applied


def _packed(model: onnx.ModelProto, sample_df: pd.DataFrame, spec: TrainingSpec) -> bytes | None:
    """shared.onnx_rewrite.packed's companion of the (rewritten) graph, serialised, if it gives the graph's
    outputs, every one bit for bit, on the sample rows (missing values set to 0: it takes complete rows only)
    and is small enough to embed; else None (scoring then runs the graph itself)."""
    try:
        variant = onnx_rewrite.packed(model)
        if variant is None:
            return None
        onnx.checker.check_model(variant)
        data: bytes = variant.SerializeToString()
        if len(data) > PACKED_MAX_BYTES:
            log.info("packed graph not embedded (model=%s): %d bytes > %d", spec.name, len(data), PACKED_MAX_BYTES)
            return None
        graph = make_session(model.SerializeToString())
        feeds = onnx_inputs(graph, sample_df.head(64), spec)
        names = [i.name for i in graph.get_inputs()]
        rows = np.nan_to_num(np.hstack([feeds[n] for n in names]))  # [N, F] float64, no missing value
        companion = make_session(data)
        outputs = [o.name for o in companion.get_outputs()]  # the graph's, perhaps without the looked-up label
        if not {*outputs} <= {o.name for o in graph.get_outputs()}:
            raise ValueError(f"outputs {outputs} are not the graph's")
        expected = graph.run(outputs, {n: np.ascontiguousarray(rows[:, [i]]) for i, n in enumerate(names)})
        got = companion.run(outputs, {PACKED_INPUT: np.ascontiguousarray(rows.T)})
        differ = [name for name, a, b in zip(outputs, expected, got, strict=True) if not np.array_equal(a, b)]
        if differ:
            raise ValueError(f"outputs {differ} differ from the graph's")
    except Exception as exc:  # an optimisation: the graph itself always answers
        log.warning("packed graph not embedded (model=%s): %s: %s", spec.name, type(exc).__name__, exc)
        return None
    return data


Outputs = tuple[np.ndarray, np.ndarray | None]  # run_onnx's (labels or predictions, probabilities)


def _check_same_outputs(before: Outputs, after: Outputs) -> None:
    for a, b in zip(before, after, strict=True):
        if a is None or b is None:
            continue
        if a.dtype.kind == "f":
            if not np.allclose(a, b, rtol=REWRITE_TOLERANCE, atol=REWRITE_TOLERANCE, equal_nan=True):
                raise ValueError(f"outputs differ by up to {np.nanmax(np.abs(a - b)):.3g}")
        elif not np.array_equal(a, b):
            raise ValueError("labels differ")


def _check_label_index(session: ort.InferenceSession, rows: pd.DataFrame, spec: TrainingSpec,
                       classes: list[Any] | None) -> None:
    """The labels scoring takes from the signature's classes at the label index are the graph's labels."""
    labels, index = session.run(["label", LABEL_INDEX], onnx_inputs(session, rows, spec))
    if not classes or not np.array_equal(np.asarray(labels).ravel(), np.asarray(classes, dtype=object)[index.ravel()]):
        raise ValueError("the classes at the label index are not the labels")


def _export_rejected(spec: TrainingSpec, sample_df: pd.DataFrame, message: str) -> ModelRejected:
    return model_rejected("export", f"model={spec.name}, estimator={spec.estimator.type}", len(sample_df),
                          [str(c) for c in sample_df.columns],
                          [{"column": None, "check": "onnx_conversion", "message": message, "count": None}])


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """Numeric SimpleImputer as Where(IsNaN(x), statistics, x) in the input's precision."""
    if isinstance(operator.inputs[0].type, StringTensorType):
        convert_sklearn_imputer(scope, operator, container)
        return
    imputer = operator.raw_operator
    is_double = isinstance(operator.inputs[0].type, DoubleTensorType)
    proto = onnx_proto.TensorProto.DOUBLE if is_double else onnx_proto.TensorProto.FLOAT
    dtype = np.float64 if is_double else np.float32
    statistics = imputer.statistics_.astype(dtype)
    x = concatenate_variables(scope, operator.inputs, container)
    fill = scope.get_unique_variable_name("impute_fill")
    container.add_initializer(fill, proto, [1, statistics.size], statistics.tolist())
    is_nan = scope.get_unique_variable_name("impute_isnan")
    container.add_node("IsNaN", [x], [is_nan], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node("Where", [is_nan, fill, x], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Where"))


class _HistTreeContainer:
    """Container proxy fixing skl2onnx's HistGradientBoosting tree attributes (see module doc)."""

    def __init__(self, container: Any, model: Any) -> None:
        self._container = container
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, **attrs: Any) -> None:
        if op_type in _TREE_OPS:
            attrs["nodes_missing_value_tracks_true"] = [
                int(v) for v in attrs["nodes_missing_value_tracks_true"]]
            attrs["nodes_values"] = self._thresholds(attrs)
        self._container.add_node(op_type, inputs, outputs, **attrs)

    def _thresholds(self, attrs: dict[str, Any]) -> np.ndarray:
        # sklearn compares float64(x32) <= t; for a float32 x that equals x32 <= the largest
        # float32 not above t. Tree ids are iteration * trees_per_iteration + class index.
        per_iteration = self._model.n_trees_per_iteration_
        values = np.asarray(attrs["nodes_values"], dtype=np.float32).copy()
        nodes = zip(attrs["nodes_treeids"], attrs["nodes_nodeids"], attrs["nodes_modes"],
                    strict=True)
        for i, (tree_id, node_id, mode) in enumerate(nodes):
            if mode != "BRANCH_LEQ":
                continue
            predictor = self._model._predictors[tree_id // per_iteration][tree_id % per_iteration]
            threshold = float(predictor.nodes[node_id]["num_threshold"])
            rounded = np.float32(threshold)
            if float(rounded) > threshold:
                rounded = np.nextafter(rounded, np.float32(-np.inf))
            values[i] = rounded
        return values


def _convert_hist_classifier(scope: Any, operator: Any, container: Any) -> None:
    convert_sklearn_random_forest_classifier(
        scope, operator, _HistTreeContainer(container, operator.raw_operator))


def _convert_hist_regressor(scope: Any, operator: Any, container: Any) -> None:
    convert_sklearn_random_forest_regressor_converter(
        scope, operator, _HistTreeContainer(container, operator.raw_operator))
