"""Training is deterministic; every allow-listed estimator converts to ONNX and passes parity."""
from __future__ import annotations

import hashlib
import io
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from examples import datasets
from shared import arrow_bodies, onnx_rewrite, scoring
from shared.data_checks import load_dataset, prepare
from shared.errors import DataRejected
from shared.onnx_export import (
    REWRITES_KEY,
    SIGNATURE_KEY,
    ParityReport,
    build_signature,
    export_onnx,
    make_session,
    measure_latency,
    onnx_facts,
    parity_check,
    read_signature,
    run_onnx,
)
from shared.scoring import LABEL_INDEX
from shared.spec import ESTIMATOR_PARAMS, TrainingSpec, parse_spec
from shared.training import (
    CATEGORICAL_MISSING,
    compute_metrics,
    frame_for_spec,
    library_versions,
    pipeline_from_bytes,
    pipeline_to_bytes,
    train,
)
from shared.validation import decide

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 500},
    "random_forest": {"n_estimators": 15, "max_depth": 8},
    "gradient_boosting": {"n_estimators": 15},
    "hist_gradient_boosting": {"max_iter": 15},
    "random_forest_regressor": {"n_estimators": 15, "max_depth": 8},
    "ridge": {"alpha": 0.5},
    "gradient_boosting_regressor": {"n_estimators": 15},
    "hist_gradient_boosting_regressor": {"max_iter": 15},
}
CLASSIFIERS = sorted(k for k, (task, _) in ESTIMATOR_PARAMS.items() if task == "classification")
REGRESSORS = sorted(k for k, (task, _) in ESTIMATOR_PARAMS.items() if task == "regression")


def make_spec(estimator: str, target: str = "label", **changes: Any) -> TrainingSpec:
    task = ESTIMATOR_PARAMS[estimator][0]
    data: dict[str, Any] = {
        "name": f"t-{estimator.replace('_', '-')}",
        "task": task,
        "target": target,
        "features": [
            {"name": "a", "kind": "numeric"},
            {"name": "b", "kind": "numeric"},
            {"name": "colour", "kind": "categorical", "allowed": ["red", "green", "blue"]},
        ],
        "estimator": {"type": estimator, "params": SMALL_PARAMS[estimator]},
        "data_checks": {"min_rows": 10},
    }
    data.update(changes)
    return parse_spec(json.dumps(data), "spec.json")


@cache
def frame(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    b = np.round(rng.normal(10, 5, rows), 1)  # ties in b exercise split thresholds
    colour = rng.choice(["red", "green", "blue"], size=rows).astype(object)
    signal = a + (b - 10) / 5 + (colour == "red") + rng.normal(0, 0.7, rows)
    out = pd.DataFrame({"a": a, "b": b, "colour": colour})
    out.loc[::13, "a"] = np.nan
    out.loc[::11, "colour"] = None
    out["label"] = np.where(signal > 0.3, "yes", "no").astype(object)
    out["grade"] = np.digitize(signal, [-0.5, 0.8]).astype(np.int64)  # 3 classes: 0, 1, 2
    out["amount"] = 3 * a.clip(-2, 2) + b * 10 + (colour == "blue") * 7 + rng.normal(0, 1, rows)
    return out


def data_for(spec: TrainingSpec) -> pd.DataFrame:
    return prepare(frame()[[*spec.feature_names, spec.target]], spec).frame


def test_the_parametrised_lists_cover_the_whole_allow_list() -> None:
    assert sorted(SMALL_PARAMS) == sorted(ESTIMATOR_PARAMS)


CASES = ([(e, "label") for e in CLASSIFIERS] + [(e, "grade") for e in CLASSIFIERS]
         + [(e, "amount") for e in REGRESSORS])


@pytest.mark.parametrize(("estimator", "target"), CASES)
def test_every_allow_listed_estimator_converts_and_passes_parity(estimator: str,
                                                                 target: str) -> None:
    spec = make_spec(estimator, target)
    result = train(data_for(spec), spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    parity = parity_check(result.pipeline, onnx_bytes, result.holdout, spec)
    assert parity.passed, parity.reasons
    assert ParityReport.from_dict(json.loads(json.dumps(parity.to_dict()))) == parity
    if spec.task == "classification":
        assert parity.max_abs_diff <= 1e-5
        assert parity.label_agreement == 1.0 and parity.near_tie_disagreements == 0
        assert parity.n_classes == (2 if target == "label" else 3)
    else:
        assert parity.max_rel_diff is not None and parity.max_rel_diff <= 1e-5
    # Metrics recomputed from ONNX outputs agree with the sklearn holdout metrics.
    labels, proba = run_onnx(onnx_bytes, result.holdout, spec)
    onnx_metrics = compute_metrics(spec.task, result.holdout[target].to_numpy(), labels, proba,
                                   result.classes)
    assert onnx_metrics.keys() == result.metrics.keys()
    for name, value in result.metrics.items():
        assert onnx_metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name


def test_onnx_contract_inputs_outputs_and_signature() -> None:
    spec = make_spec("random_forest", "grade")
    result = train(data_for(spec), spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    session = make_session(onnx_bytes)
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {"a": ("tensor(double)", [None, 1]), "b": ("tensor(double)", [None, 1]),
                      "colour": ("tensor(string)", [None, 1])}
    outputs = [(o.name, len(o.shape)) for o in session.get_outputs()]
    assert outputs == [("label", 1), ("probabilities", 2)]
    signature = read_signature(onnx_bytes)
    assert signature == {
        "name": spec.name, "task": "classification", "target": "grade",
        "features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
                     {"name": "colour", "kind": "categorical"}],
        "classes": [0, 1, 2], "categorical_missing": CATEGORICAL_MISSING,
        "input_types": {"a": "double", "b": "double", "colour": "string"},
        "outputs": ["label", "probabilities"],
    }
    props = {p.key for p in onnx.load_from_string(onnx_bytes).metadata_props}
    assert SIGNATURE_KEY in props
    facts = onnx_facts(onnx_bytes)
    assert facts["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert facts["size_bytes"] == len(onnx_bytes)
    assert facts["opset"]["ai.onnx"] == 18 and "ai.onnx.ml" in facts["opset"]


def test_the_signature_marks_optional_features_and_only_those() -> None:
    spec = make_spec("random_forest", "grade")
    marked = spec.model_copy(update={"features": [spec.features[0].model_copy(update={"optional": True}),
                                                  *spec.features[1:]]})
    features = build_signature(marked, [0, 1, 2])["features"]
    assert features[0] == {"name": "a", "kind": "numeric", "optional": True}
    assert all("optional" not in f for f in features[1:])  # absent means mandatory, as before the flag


def test_regression_graph_has_a_single_variable_output() -> None:
    spec = make_spec("ridge", "amount")
    result = train(data_for(spec), spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    session = make_session(onnx_bytes)
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("variable", [None, 1])]
    assert "classes" not in read_signature(onnx_bytes)


def test_missing_and_unseen_categories_score_like_sklearn() -> None:
    spec = make_spec("gradient_boosting", "label")
    result = train(data_for(spec), spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    rows = pd.DataFrame({"a": [0.1, np.nan, 2.0], "b": [10.0, 3.0, np.nan],
                         "colour": [None, "purple", "red"], "label": ["no", "no", "no"]})
    parity = parity_check(result.pipeline, onnx_bytes, rows, spec)
    assert parity.passed, parity.reasons
    labels, proba = run_onnx(onnx_bytes, rows, spec)
    assert labels.shape == (3,) and proba is not None and proba.shape == (3, 2)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_training_is_deterministic_down_to_the_onnx_bytes() -> None:
    spec = make_spec("random_forest", "label")
    first, second = (train(data_for(spec), spec) for _ in range(2))
    assert first.metrics == second.metrics
    assert first.holdout.equals(second.holdout)
    assert (first.train_rows, first.holdout_rows) == (320, 80)
    one = export_onnx(first.pipeline, spec, first.holdout)
    two = export_onnx(second.pipeline, spec, second.holdout)
    assert onnx_facts(one)["sha256"] == onnx_facts(two)["sha256"]


def test_a_different_seed_gives_a_different_split() -> None:
    spec = make_spec("logistic_regression", "label")
    reseeded = make_spec("logistic_regression", "label", split={"seed": 7})
    assert not train(data_for(spec), spec).holdout.equals(
        train(data_for(reseeded), reseeded).holdout)


def test_stratified_split_holds_class_proportions() -> None:
    spec = make_spec("logistic_regression", "grade")
    data = data_for(spec)
    result = train(data, spec)
    overall = data["grade"].value_counts(normalize=True).sort_index()
    held = result.holdout["grade"].value_counts(normalize=True).sort_index()
    assert np.allclose(overall, held, atol=0.02)


def test_a_class_too_rare_to_stratify_is_a_data_rejection() -> None:
    spec = make_spec("logistic_regression", "label")
    data = data_for(spec).copy()
    data.loc[0, "label"] = "maybe"  # one row of a third class
    with pytest.raises(DataRejected) as caught:
        train(data, spec)
    assert "stratify" in caught.value.message and caught.value.status == 422
    assert isinstance(caught.value.details, dict)
    assert caught.value.details["problems"][0]["check"] == "split"


def test_pipeline_bytes_round_trip() -> None:
    spec = make_spec("hist_gradient_boosting", "label")
    result = train(data_for(spec), spec)
    loaded = pipeline_from_bytes(pipeline_to_bytes(result.pipeline))
    features = result.holdout[spec.feature_names].fillna({"colour": CATEGORICAL_MISSING})
    assert np.array_equal(loaded.predict_proba(features), result.pipeline.predict_proba(features))
    with pytest.raises(TypeError):
        pipeline_from_bytes(pipeline_to_bytes({"not": "a pipeline"}))


def test_metrics_cover_the_task_and_fit_time_is_measured() -> None:
    spec = make_spec("logistic_regression", "label")
    result = train(data_for(spec), spec)
    assert set(result.metrics) == {"accuracy", "roc_auc", "f1", "log_loss", "precision", "recall"}
    assert result.fit_seconds > 0 and result.classes == ["no", "yes"]
    assert set(library_versions()) == {"sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy",
                                       "pandas", "python"}


def test_compute_metrics_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    metrics = compute_metrics("classification", y, proba.argmax(axis=1), proba, [0, 1])
    assert metrics["accuracy"] == 0.75 and metrics["roc_auc"] == 1.0
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == 1.0
    one_class = compute_metrics("classification", np.array([1, 1]), np.array([1, 0]),
                                proba[2:], [0, 1])
    assert "roc_auc" not in one_class  # undefined on a one-class holdout: left out, not NaN
    regression = compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], None, None)
    assert regression["rmse"] == pytest.approx(np.sqrt(4 / 3)) and regression["mae"] == 2 / 3


def test_latency_is_measured_on_a_single_row() -> None:
    spec = make_spec("ridge", "amount")
    result = train(data_for(spec), spec)
    latency = measure_latency(export_onnx(result.pipeline, spec, result.holdout),
                              result.holdout, spec, runs=30)
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] < 1000


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes", "predictive-maintenance"])
def test_example_specs_train_export_and_meet_their_own_bar(name: str) -> None:
    spec = parse_spec((EXAMPLES / f"{name}.yaml").read_bytes(), f"{name}.yaml")
    raw = {"breast-cancer": datasets.breast_cancer, "diabetes": datasets.diabetes,
           "predictive-maintenance": lambda: datasets.predictive_maintenance(3000, 7)}[name]()
    prepared = prepare(raw, spec)
    result = train(prepared.frame, spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    parity = parity_check(result.pipeline, onnx_bytes, result.holdout, spec)
    decision = decide(spec, result.metrics, None, 1.0, parity)
    expected = "pending_approval" if spec.approval == "manual" else "promote"
    assert decision.outcome == expected, decision.reasons


def test_a_holdout_stored_as_parquet_scores_the_same() -> None:
    spec = make_spec("random_forest", "label")
    result = train(data_for(spec), spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout)
    buffer = io.BytesIO()
    result.holdout.to_parquet(buffer, index=False)
    reread = pd.read_parquet(io.BytesIO(buffer.getvalue()))  # pandas 3: str dtype, NaN
    assert parity_check(result.pipeline, onnx_bytes, reread, spec).passed
    before, _ = run_onnx(onnx_bytes, result.holdout, spec)
    after, _ = run_onnx(onnx_bytes, reread, spec)
    assert before.tolist() == after.tolist()


def loaded_source() -> pd.DataFrame:
    """frame() plus raw columns no spec uses, through CSV as a dropped dataset is loaded."""
    raw = frame().assign(row_id=np.arange(400), note=[f"n{i % 7}" for i in range(400)])
    return load_dataset(raw.to_csv(index=False).encode(), "data.csv")


def parquet_round_trip(df: pd.DataFrame) -> pd.DataFrame:
    """What the pipeline stores and reads back (pandas 3: str dtype, NaN for missing)."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


def test_the_holdout_carries_extra_columns_after_the_spec_columns() -> None:
    spec = make_spec("logistic_regression", "label")
    source = loaded_source()
    prepared = prepare(source, spec)
    result = train(prepared.frame, spec, extra=prepared.extra)
    plain = train(prepared.frame, spec)
    assert list(result.holdout.columns) == ["a", "b", "colour", "label", "grade", "amount", "row_id", "note"]
    assert result.holdout[plain.holdout.columns].equals(plain.holdout) and result.metrics == plain.metrics
    # Same row selection: each holdout row's raw columns are the source row's.
    by_id = source.set_index("row_id").loc[result.holdout["row_id"]]
    assert result.holdout["note"].tolist() == by_id["note"].tolist()
    assert np.allclose(result.holdout["a"], by_id["a"], equal_nan=True)
    with pytest.raises(ValueError, match="rows="):
        train(prepared.frame, spec, extra=prepared.extra.head(3))


def challenger_and_champion() -> tuple[TrainingSpec, TrainingSpec]:
    """The challenger drops feature b; the champion was trained on a, b and colour."""
    challenger = make_spec("logistic_regression", "label", features=[
        {"name": "a", "kind": "numeric"}, {"name": "colour", "kind": "categorical"}])
    return challenger, make_spec("random_forest", "label")


def challenger_holdout(challenger: TrainingSpec) -> pd.DataFrame:
    prepared = prepare(loaded_source(), challenger)
    return parquet_round_trip(train(prepared.frame, challenger, extra=prepared.extra).holdout)


def test_frame_for_spec_rebuilds_the_champion_frame_from_a_challenger_holdout() -> None:
    challenger, champion = challenger_and_champion()
    holdout = challenger_holdout(challenger)
    assert "b" not in challenger.feature_names and "b" in holdout.columns  # b rode along as raw
    rebuilt, missing = frame_for_spec(holdout, champion)
    assert missing == [] and rebuilt is not None
    own = prepare(loaded_source(), champion).frame.iloc[holdout["row_id"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt, own)  # values, column order and prepare's dtypes
    assert rebuilt["colour"].dtype == object and rebuilt["b"].dtype == np.float64
    assert any(v is None for v in rebuilt["colour"])


def test_frame_for_spec_types_a_raw_frame_exactly_as_prepare_does() -> None:
    spec = make_spec("logistic_regression", "grade")
    source = loaded_source()
    rebuilt, missing = frame_for_spec(source, spec)
    assert missing == [] and rebuilt is not None
    pd.testing.assert_frame_equal(rebuilt, prepare(source, spec).frame)


def test_frame_for_spec_lists_every_column_absent_from_the_frame() -> None:
    challenger, _ = challenger_and_champion()
    holdout = challenger_holdout(challenger)
    other = make_spec("logistic_regression", "label", features=[
        {"name": "a", "kind": "numeric"}, {"name": "torque", "kind": "numeric"}])
    assert frame_for_spec(holdout, other) == (None, ["torque"])
    renamed = make_spec("logistic_regression", "failed", features=[{"name": "speed", "kind": "numeric"}])
    assert frame_for_spec(holdout, renamed) == (None, ["speed", "failed"])


def test_a_champion_scores_a_rebuilt_frame_like_its_own_prepared_rows() -> None:
    challenger, champion = challenger_and_champion()
    holdout = challenger_holdout(challenger)
    own = prepare(loaded_source(), champion).frame
    model = train(own, champion)
    onnx_bytes = export_onnx(model.pipeline, champion, model.holdout)
    rebuilt, _ = frame_for_spec(holdout, champion)
    assert rebuilt is not None
    labels, proba = run_onnx(onnx_bytes, rebuilt, champion)
    own_labels, own_proba = run_onnx(onnx_bytes, own.iloc[holdout["row_id"]], champion)
    assert labels.tolist() == own_labels.tolist()
    assert proba is not None and own_proba is not None and np.array_equal(proba, own_proba)


def _breast_cancer() -> tuple[TrainingSpec, Any, pd.DataFrame]:
    spec = parse_spec((EXAMPLES / "breast-cancer.yaml").read_bytes(), "breast-cancer.yaml")
    result = train(prepare(datasets.breast_cancer(), spec).frame, spec)
    holdout = result.holdout.copy()
    holdout.iloc[::3, 2:9] = np.nan  # the imputer's path too
    return spec, result, holdout


def test_a_numeric_linear_model_is_exported_rewritten_and_scores_as_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    """shared.onnx_rewrite's rewrites apply to the breast-cancer pipeline (imputer, scaler, logistic regression),
    are named in the metadata, and change no output beyond the MatMul's rounding."""
    spec, result, holdout = _breast_cancer()
    rewritten = export_onnx(result.pipeline, spec, result.holdout)
    monkeypatch.setattr(onnx_rewrite, "REWRITES", {})
    converted = export_onnx(result.pipeline, spec, result.holdout)
    props = {p.key: p.value for p in onnx.load_from_string(rewritten).metadata_props}
    assert props[REWRITES_KEY] == "fold_affine,feature_major,label_index,binary_logistic,packed"
    assert {p.key: p.value for p in onnx.load_from_string(converted).metadata_props}[REWRITES_KEY] == ""
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert "Div" not in ops and "Transpose" in ops and "ArgMax" not in ops  # the scaler folded, one score
    (labels, proba), (labels0, proba0) = run_onnx(rewritten, holdout, spec), run_onnx(converted, holdout, spec)
    assert list(labels) == list(labels0)
    assert proba is not None and proba0 is not None
    np.testing.assert_allclose(proba, proba0, rtol=1e-9, atol=1e-12)
    assert parity_check(result.pipeline, rewritten, result.holdout, spec).passed


def test_served_labels_come_from_the_label_index_and_match_the_graph_s_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring asks the rewritten graph for label_index instead of label; the answers (JSON and Arrow) are the
    converted graph's, label for label."""
    spec, result, holdout = _breast_cancer()
    rewritten = export_onnx(result.pipeline, spec, result.holdout)
    monkeypatch.setattr(onnx_rewrite, "REWRITES", {})
    converted = export_onnx(result.pipeline, spec, result.holdout)
    loaded = [scoring.ModelCache(lambda m, a: (1, "e"), lambda m, v, d=data: (d, hashlib.sha256(d).hexdigest()),
                                 60).get(spec.name) for data in (rewritten, converted)]
    assert [m.signature.run_outputs for m in loaded] == [(LABEL_INDEX, "probabilities"), ("label", "probabilities")]
    feeds = {f.name: holdout[[f.name]].to_numpy(np.float64) for f in spec.features}
    (labels, proba, index), (labels0, proba0, index0) = (scoring.run_model(m, feeds) for m in loaded)
    assert index is not None and index0 is None and labels.dtype == labels0.dtype == object
    assert labels.tolist() == labels0.tolist() and len(set(labels0.tolist())) == 2
    ids = [f"r{i}" for i in range(len(labels))]
    tables = [arrow_bodies.results_table(labels, proba, loaded[0].signature.class_keys, ids, 1, index),
              arrow_bodies.results_table(labels0, proba0, loaded[1].signature.class_keys, ids, 1)]
    assert tables[0].column("prediction").to_pylist() == tables[1].column("prediction").to_pylist()


def test_the_embedded_packed_graph_serves_complete_rows_as_the_model_s_graph_does() -> None:
    """export_onnx embeds the packed companion; scoring loads it and, for rows with no missing value, answers
    what the model's graph answers, bit for bit (both sessions fed the same holdout rows)."""
    spec, result, holdout = _breast_cancer()
    data = export_onnx(result.pipeline, spec, result.holdout)
    loaded = scoring.load_model(data, hashlib.sha256(data).hexdigest(), spec.name, 1)
    assert loaded.packed is not None and loaded.run_packed is not None
    rows = np.asfortranarray(result.holdout[[f.name for f in spec.features]].to_numpy(np.float64))
    assert not np.isnan(rows).any()
    feeds = {f.name: np.ascontiguousarray(rows[:, [i]]) for i, f in enumerate(spec.features)}
    for n in (1, 7, len(rows)):
        part = {name: values[:n] for name, values in feeds.items()}
        packed = scoring.run_model(loaded, part, n, np.ascontiguousarray(rows[:n].T))
        graph = scoring.run_model(loaded, part, n)
        assert packed.labels.tolist() == graph.labels.tolist()
        assert packed.probabilities is not None and graph.probabilities is not None
        assert np.array_equal(packed.probabilities, graph.probabilities)


def test_a_packed_graph_that_answers_differently_is_not_embedded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    spec, result, _ = _breast_cancer()
    packed = onnx_rewrite.packed

    def shifted(model: onnx.ModelProto) -> onnx.ModelProto | None:
        variant = packed(model)
        assert variant is not None
        bias = next(i for i in variant.graph.initializer if "intercept" in i.name)
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1e-12, bias.name))
        return variant

    monkeypatch.setattr(onnx_rewrite, "packed", shifted)
    with caplog.at_level(logging.WARNING, logger="shared.onnx_export"):
        data = export_onnx(result.pipeline, spec, result.holdout)
    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert scoring.PACKED_KEY not in props
    assert props[REWRITES_KEY] == "fold_affine,feature_major,label_index,binary_logistic"
    assert "packed graph not embedded" in caplog.text and "differ from the graph's" in caplog.text


def test_a_model_with_a_categorical_input_gets_no_packed_graph() -> None:
    spec = make_spec("logistic_regression", "label")
    assert any(f.kind == "categorical" for f in spec.features)
    result = train(data_for(spec), spec)
    props = {p.key: p.value for p in onnx.load_from_string(export_onnx(result.pipeline, spec, result.holdout))
             .metadata_props}
    assert scoring.PACKED_KEY not in props and "packed" not in props[REWRITES_KEY]


def test_a_label_index_that_points_at_the_wrong_class_is_not_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    spec, result, _ = _breast_cancer()
    monkeypatch.setattr(onnx_rewrite, "REWRITES", {})
    converted = export_onnx(result.pipeline, spec, result.holdout)

    def other_class(model: onnx.ModelProto) -> bool:  # label_index, then 1 - index: the other of two classes
        assert onnx_rewrite.label_index(model)
        onnx_rewrite._rename(model.graph, LABEL_INDEX, "true_index")  # the labels keep reading the true index
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([[1]], dtype=np.int64), "one"))
        model.graph.node.append(onnx.helper.make_node("Sub", ["one", "true_index"], [LABEL_INDEX]))
        return True

    monkeypatch.setattr(onnx_rewrite, "REWRITES", {"label_index": other_class})
    with caplog.at_level(logging.WARNING, logger="shared.onnx_export"):
        assert export_onnx(result.pipeline, spec, result.holdout) == converted
    assert "the classes at the label index are not the labels" in caplog.text


def test_a_rewrite_that_changes_an_output_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """export_onnx checks the rewritten graph against the converted one and keeps the converted one on a mismatch."""
    spec, result, _ = _breast_cancer()
    monkeypatch.setattr(onnx_rewrite, "REWRITES", {})
    converted = export_onnx(result.pipeline, spec, result.holdout)

    def shift_the_bias(model: onnx.ModelProto) -> bool:
        onnx_rewrite.fold_affine(model)
        bias = next(i for i in model.graph.initializer if i.name == "intercept")
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1e-6, "intercept"))
        return True

    monkeypatch.setattr(onnx_rewrite, "REWRITES", {"shift_the_bias": shift_the_bias})
    assert export_onnx(result.pipeline, spec, result.holdout) == converted
