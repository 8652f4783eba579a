"""Drift monitoring: no false alarms on stationary traffic, alarms on drifted traffic, bounded streaming.

The reference is the predictive-maintenance example (examples/datasets.py) profiled as the pipeline
profiles it; "the model" is a fixed logistic function of torque and tool wear, so the tests need no
training. Log blobs are written in the logger's format, by hand or by the real PredictionLogger.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from examples.datasets import predictive_maintenance
from shared.memory_storage import MemoryStorage
from shared.monitoring.drift import (
    DriftAccumulator,
    DriftResult,
    Reservoir,
    holdout_output_profile,
    quantile_sample,
    reference_sample_from_frame,
)
from shared.monitoring.window import (
    PART_ROWS,
    LogChunk,
    category_column,
    feature_kinds,
    iter_log_chunks,
    numeric_column,
)
from shared.paths import PREDICTIONS
from shared.prediction_log import PredictionLogger
from shared.profile import profile_dataset
from shared.spec import TrainingSpec, parse_spec
from shared.training import prepared_frame

SPEC_PATH = Path(__file__).resolve().parents[2] / "examples" / "specs" / "predictive-maintenance.yaml"
CLASSES = ("0", "1")
WINDOW_ROWS = 1000
STATIONARY_WINDOWS = 30


@pytest.fixture(scope="module")
def spec() -> TrainingSpec:
    return parse_spec(SPEC_PATH.read_bytes(), SPEC_PATH.name)


@pytest.fixture(scope="module")
def reference(spec: TrainingSpec) -> dict[str, Any]:
    """The champion's training profile, training sample and holdout outputs."""
    train = prepared_frame(predictive_maintenance(5000, seed=7), spec)
    holdout = prepared_frame(predictive_maintenance(1250, seed=8), spec)
    labels, probabilities = _model(holdout)
    return {
        "profile": profile_dataset(train, spec),
        "sample": reference_sample_from_frame(train, spec),
        "holdout": holdout_output_profile("classification", labels, probabilities, CLASSES),
    }


def _accumulator(spec: TrainingSpec, reference: dict[str, Any], **kwargs: Any) -> DriftAccumulator:
    return DriftAccumulator(spec, reference["profile"], reference["sample"], reference["holdout"], **kwargs)


def _model(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    torque = frame["torque"].fillna(40.0).to_numpy(np.float64)
    wear = frame["tool_wear"].to_numpy(np.float64)
    p = 1.0 / (1.0 + np.exp(-(-3.0 + 0.02 * (wear - 100.0) + 0.08 * (torque - 40.0))))
    return (p >= 0.5).astype(np.int64), np.column_stack([1.0 - p, p])


def _traffic(spec: TrainingSpec, rows: int, seed: int, drift: bool = False) -> pd.DataFrame:
    return prepared_frame(predictive_maintenance(rows, seed=seed, drift=drift), spec)


def _chunk(spec: TrainingSpec, frame: pd.DataFrame) -> LogChunk:
    """The LogChunk iter_log_chunks would yield for these rows."""
    labels, probabilities = _model(frame)
    features = {f.name: (numeric_column if f.kind == "numeric" else category_column)(frame[f.name].tolist())
                for f in spec.features}
    return LogChunk(timestamps=np.zeros(len(frame)), prediction_ids=[f"r-{i}" for i in range(len(frame))],
                    features=features, predictions=numeric_column(labels.tolist()), probabilities=probabilities,
                    classes=CLASSES)


def _slices(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for begin in range(0, len(frame), size):
        yield frame.iloc[begin:begin + size]


def _flags(result: DriftResult) -> list[str]:
    """Every drifted flag in the result, by where it is."""
    flags = [f"{name}.{s.name}" for name, f in result.features.items() for s in f.statistics if s.drifted]
    flags += [f"prediction.{s.name}" for s in result.prediction_drift.statistics if s.drifted]
    return flags


# -- verdicts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("window_rows", [200, WINDOW_ROWS])  # 200: the default min_rows, the noisiest window
def test_stationary_traffic_raises_no_dataset_drift_in_thirty_windows(spec: TrainingSpec, reference: dict[str, Any],
                                                                     window_rows: int) -> None:
    alerts, feature_alerts = 0, []
    for seed in range(100, 100 + STATIONARY_WINDOWS):
        accumulator = _accumulator(spec, reference)
        accumulator.add(_chunk(spec, _traffic(spec, window_rows, seed)))
        result = accumulator.result()
        assert result.status == "ok"
        alerts += bool(result.dataset_drift)
        feature_alerts += result.drifted_features
    print(f"\n{STATIONARY_WINDOWS} stationary windows of {window_rows} rows: {alerts} dataset-drift alerts, "
          f"{len(feature_alerts)} feature alerts {sorted(set(feature_alerts))}")
    assert alerts == 0


def test_drifted_traffic_raises_dataset_drift_in_its_first_full_window(spec: TrainingSpec,
                                                                       reference: dict[str, Any]) -> None:
    accumulator = _accumulator(spec, reference)
    for batch in _slices(_traffic(spec, WINDOW_ROWS, seed=200, drift=True), 50):
        accumulator.add(_chunk(spec, batch))
        result = accumulator.result()
        if result.rows < spec.monitoring.min_rows:
            assert result.status == "insufficient_data" and result.dataset_drift is None
            continue
        assert result.status == "ok"
        assert result.dataset_drift is True, result.to_json()
        break
    assert result.rows == spec.monitoring.min_rows
    # the example's drift shifts temperatures (1.5 std), speed, torque, wear and the machine-type mix
    assert {"air_temperature", "process_temperature"} <= set(result.drifted_features)
    assert result.features["air_temperature"].statistics[0].value > 1.0  # air is 1.5 std hotter


def test_a_full_window_of_drifted_traffic_flags_every_feature_and_the_predictions(
        spec: TrainingSpec, reference: dict[str, Any]) -> None:
    accumulator = _accumulator(spec, reference)
    accumulator.add(_chunk(spec, _traffic(spec, WINDOW_ROWS, seed=201, drift=True)))
    result = accumulator.result()
    assert set(result.drifted_features) == set(spec.feature_names)  # machine-type mix included
    prediction = result.prediction_drift
    assert prediction.status == "ok" and prediction.drifted is True
    names = [s.name for s in prediction.statistics]
    assert names == ["labels_jensen_shannon", "positive_probability_wasserstein_normalised",
                     "positive_probability_psi"]


def test_a_window_under_min_rows_is_insufficient_data_and_raises_nothing(spec: TrainingSpec,
                                                                          reference: dict[str, Any]) -> None:
    accumulator = _accumulator(spec, reference)
    # drifted traffic, so every statistic would fire if the window were judged
    accumulator.add(_chunk(spec, _traffic(spec, spec.monitoring.min_rows - 1, seed=202, drift=True)))
    result = accumulator.result()
    body = result.to_json()
    assert result.status == "insufficient_data" and body["status"] == "insufficient_data"
    assert body["dataset_drift"] is None
    assert body["drifted_features"] == [] and body["drift_share"] == 0.0
    assert _flags(result) == []
    assert body["prediction_drift"]["status"] == "insufficient_data" and body["prediction_drift"]["drifted"] is None
    # the statistics are still reported, for the record
    assert result.features["air_temperature"].statistics[0].value > 1.0


def test_an_empty_window_is_insufficient_data(spec: TrainingSpec, reference: dict[str, Any]) -> None:
    body = _accumulator(spec, reference).result().to_json()
    assert body["status"] == "insufficient_data" and body["rows"] == 0 and body["dataset_drift"] is None
    assert body["data_quality"]["null_rate"] == 0.0
    _assert_json_safe(body)


def test_a_mostly_null_feature_is_not_judged_on_its_few_values(spec: TrainingSpec,
                                                                reference: dict[str, Any]) -> None:
    frame = _traffic(spec, WINDOW_ROWS, seed=203, drift=True)
    frame.loc[frame.index[10:], "air_temperature"] = np.nan
    accumulator = _accumulator(spec, reference)
    accumulator.add(_chunk(spec, frame))
    air = accumulator.result().features["air_temperature"]
    assert air.status == "insufficient_data" and not air.drifted and air.present == 10
    assert air.null_rate == pytest.approx(0.99)


# -- reports ------------------------------------------------------------------------------------------


def test_the_report_has_every_documented_field_and_is_json_safe(spec: TrainingSpec,
                                                                 reference: dict[str, Any]) -> None:
    frame = _traffic(spec, 500, seed=204)
    frame.loc[frame.index[:5], "torque"] = 999.0  # spec max is 150
    frame.loc[frame.index[:20], "machine_type"] = "X"  # not an allowed category
    accumulator = _accumulator(spec, reference)
    accumulator.add(_chunk(spec, frame))
    body = accumulator.result().to_json()
    _assert_json_safe(body)
    assert set(body) >= {"status", "rows", "dataset_drift", "drift_share", "features", "prediction_drift",
                         "data_quality"}
    torque, machine = body["features"]["torque"], body["features"]["machine_type"]
    assert torque["kind"] == "numeric" and [s["name"] for s in torque["statistics"]] == [
        "wasserstein_normalised", "psi"]
    assert set(torque) >= {"drifted", "nulls", "null_rate", "out_of_range_rate"}
    assert torque["out_of_range_rate"] == pytest.approx(5 / (500 - torque["nulls"]))
    assert machine["kind"] == "categorical" and [s["name"] for s in machine["statistics"]] == ["jensen_shannon"]
    assert machine["unseen_share"] == pytest.approx(20 / (500 - machine["nulls"]))
    quality = body["data_quality"]
    assert set(quality) == {"null_rate", "out_of_range_rate", "features"}
    assert quality["features"]["torque"]["out_of_range_rate"] == torque["out_of_range_rate"]
    nulls = sum(f["nulls"] for f in body["features"].values())
    assert quality["null_rate"] == pytest.approx(nulls / (500 * len(spec.features)))


def test_without_holdout_outputs_prediction_drift_has_no_reference(spec: TrainingSpec,
                                                                   reference: dict[str, Any]) -> None:
    accumulator = DriftAccumulator(spec, reference["profile"], reference["sample"], None)
    accumulator.add(_chunk(spec, _traffic(spec, 300, seed=205)))
    assert accumulator.result().to_json()["prediction_drift"] == {
        "status": "no_reference", "statistics": [], "drifted": None}


def test_without_a_reference_sample_the_profile_quantiles_stand_in(spec: TrainingSpec,
                                                                   reference: dict[str, Any]) -> None:
    stationary = DriftAccumulator(spec, reference["profile"], None, reference["holdout"])
    stationary.add(_chunk(spec, _traffic(spec, WINDOW_ROWS, seed=206)))
    drifted = DriftAccumulator(spec, reference["profile"], None, reference["holdout"])
    drifted.add(_chunk(spec, _traffic(spec, WINDOW_ROWS, seed=207, drift=True)))
    assert stationary.result().dataset_drift is False
    assert drifted.result().dataset_drift is True


def test_the_quantile_pseudo_sample_follows_the_profile(reference: dict[str, Any]) -> None:
    profile = reference["profile"]["features"]["air_temperature"]
    sample = quantile_sample(profile)
    assert sample.size == 1000 and profile["min"] <= sample.min() and sample.max() <= profile["max"]
    assert np.median(sample) == pytest.approx(profile["quantiles"]["0.5"], abs=0.05)
    assert quantile_sample({"kind": "numeric", "count": 0, "min": None, "max": None}).size == 0


def test_a_regression_model_gets_prediction_drift_on_its_predicted_values() -> None:
    spec = parse_spec(json.dumps({
        "name": "reg", "task": "regression", "target": "y", "features": [{"name": "x", "kind": "numeric"}],
        "estimator": {"type": "ridge"},
    }), "reg.json")
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=2000), "y": rng.normal(size=2000)})
    holdout = holdout_output_profile("regression", 2.0 * rng.normal(size=500))
    assert holdout["task"] == "regression" and len(holdout["predictions"]["sample"]) == 500

    def window(shift: float) -> DriftResult:
        accumulator = DriftAccumulator(spec, profile_dataset(train, spec), None, holdout)
        x = rng.normal(size=1000) + shift
        accumulator.add(LogChunk(np.zeros(1000), [str(i) for i in range(1000)], {"x": x}, 2.0 * x, None, ()))
        return accumulator.result()

    assert window(0.0).prediction_drift.drifted is False
    shifted = window(1.0)
    assert shifted.prediction_drift.drifted is True and shifted.dataset_drift is True
    assert [s.name for s in shifted.prediction_drift.statistics] == [
        "predictions_wasserstein_normalised", "predictions_psi"]


def test_holdout_output_profile_of_a_binary_classifier_is_json() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    profile = holdout_output_profile("classification", np.array([0, 1, 0]), probabilities, [0, 1])
    assert json.loads(json.dumps(profile)) == profile
    assert profile["format"] == 1 and profile["rows"] == 3 and profile["classes"] == ["0", "1"]
    assert profile["labels"]["counts"] == {"0": 2, "1": 1}
    assert profile["positive_class"] == "1"
    assert sorted(profile["positive_probability"]["sample"]) == [0.1, 0.4, 0.8]


def test_a_multiclass_holdout_profile_has_labels_but_no_positive_class() -> None:
    profile = holdout_output_profile("classification", ["a", "b", "c", "a"], np.full((4, 3), 1 / 3), "abc")
    assert profile["labels"]["counts"] == {"a": 2, "b": 1, "c": 1}
    assert "positive_class" not in profile


# -- streaming ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 37, 500])
def test_chunked_accumulation_equals_one_shot_accumulation(spec: TrainingSpec, reference: dict[str, Any],
                                                           chunk_rows: int) -> None:
    frame = _traffic(spec, 3000, seed=208, drift=True)
    # a reservoir smaller than the stream, so the sampling path is compared too
    whole = _accumulator(spec, reference, seed=5, reservoir_size=700)
    whole.add(_chunk(spec, frame))
    chunked = _accumulator(spec, reference, seed=5, reservoir_size=700)
    for batch in _slices(frame, chunk_rows):
        chunked.add(_chunk(spec, batch))
    assert chunked.result().to_json() == whole.result().to_json()


def test_the_reservoir_keeps_the_same_values_however_the_stream_is_cut() -> None:
    values = np.arange(10_000, dtype=np.float64)
    whole = Reservoir(100, np.random.default_rng(3))
    whole.add(values)
    cut = Reservoir(100, np.random.default_rng(3))
    for begin, end in itertools.pairwise([0, 1, 100, 103, 2103, 10_000]):
        cut.add(values[begin:end])
    assert np.array_equal(np.sort(whole.sample()), np.sort(cut.sample()))
    assert whole.sample().size == 100 and np.unique(whole.sample()).size == 100


def test_the_reservoir_samples_uniformly() -> None:
    # every value of a 1000-long stream should be kept with probability 100/1000
    kept = np.zeros(1000)
    for seed in range(400):
        reservoir = Reservoir(100, np.random.default_rng(seed))
        for begin in range(0, 1000, 128):
            reservoir.add(np.arange(begin, min(begin + 128, 1000), dtype=np.float64))
        kept[reservoir.sample().astype(int)] += 1
    halves = kept[:500].sum(), kept[500:].sum()
    assert abs(halves[0] - halves[1]) < 0.05 * sum(halves)  # early and late values alike
    assert kept.mean() == pytest.approx(40.0)


# -- the prediction log -------------------------------------------------------------------------------

START = datetime(2024, 5, 1, tzinfo=UTC)
END = datetime(2024, 5, 2, tzinfo=UTC)
KINDS: dict[str, Any] = {"machine_type": "categorical", "torque": "numeric"}


def _line(stamp: str, version: int = 3, request_id: str = "req", prediction_id: str | None = None,
          inputs: dict[str, Any] | None = None, prediction: Any = 1, probability: float | None = 0.8) -> bytes:
    row: dict[str, Any] = {
        "request_id": request_id, "model": "pm", "version": version, "timestamp": stamp,
        "inputs": {"machine_type": "L", "torque": 40.5} if inputs is None else inputs,
        "outputs": {"predictions": prediction},
    }
    if prediction_id is not None:
        row["prediction_id"] = prediction_id
    if probability is not None:
        row["outputs"]["probabilities"] = {"0": 1.0 - probability, "1": probability}
    return orjson.dumps(row)


def _write(storage: MemoryStorage, path: str, *lines: bytes) -> None:
    storage.write(PREDICTIONS, path, b"\n".join(lines) + b"\n")


def _window(storage: MemoryStorage, version: int | None = 3, chunk_rows: int = 10_000) -> list[LogChunk]:
    return list(iter_log_chunks(storage, "pm", version, START, END, chunk_rows, kinds=KINDS))


def test_the_window_keeps_its_version_and_time_range() -> None:
    storage = MemoryStorage()
    _write(storage, "pm/2024-04-30/235958-a.jsonl", _line("2024-04-30T23:59:57.000+00:00", prediction_id="old"))
    _write(storage, "pm/2024-05-01/000001-b.jsonl",
           _line("2024-04-30T23:59:59.999+00:00", prediction_id="before"),
           _line("2024-05-01T00:00:00.000+00:00", prediction_id="first"),
           _line("2024-05-01T00:00:00.500+00:00", version=2, prediction_id="other-version"))
    _write(storage, "pm/2024-05-01/120000-c.jsonl", _line("2024-05-01T12:00:00.000+00:00", prediction_id="noon"))
    # scored before midnight, flushed after it: the next day's folder still belongs to the window
    _write(storage, "pm/2024-05-02/000004-d.jsonl",
           _line("2024-05-01T23:59:59.900+00:00", prediction_id="last"),
           _line("2024-05-02T00:00:00.000+00:00", prediction_id="after"))
    _write(storage, "other/2024-05-01/120000-e.jsonl", _line("2024-05-01T12:00:00.000+00:00", prediction_id="x"))
    ids = [i for chunk in _window(storage) for i in chunk.prediction_ids]
    assert ids == ["first", "noon", "last"]
    every_version = [i for chunk in _window(storage, version=None) for i in chunk.prediction_ids]
    assert every_version == ["first", "other-version", "noon", "last"]
    stamps = np.concatenate([chunk.timestamps for chunk in _window(storage)])
    assert stamps[0] == START.timestamp() and stamps[-1] == pytest.approx(END.timestamp() - 0.1)


def test_blobs_flushed_long_after_the_window_are_not_read() -> None:
    storage = MemoryStorage()
    read: list[str] = []
    storage.fault = lambda op, container, path: read.append(path) if op == "read" else None
    _write(storage, "pm/2024-04-30/120000-a.jsonl", _line("2024-04-30T12:00:00.000+00:00"))
    _write(storage, "pm/2024-05-01/120000-b.jsonl", _line("2024-05-01T12:00:00.000+00:00"))
    _write(storage, "pm/2024-05-02/080000-c.jsonl", _line("2024-05-02T08:00:00.000+00:00"))
    assert sum(chunk.rows for chunk in _window(storage)) == 1
    assert read == ["pm/2024-05-01/120000-b.jsonl"]


def test_the_window_reads_null_missing_and_malformed_inputs() -> None:
    storage = MemoryStorage()
    _write(storage, "pm/2024-05-01/100000-a.jsonl",
           _line("2024-05-01T09:00:00.000+00:00", inputs={"machine_type": None, "torque": None}),
           _line("2024-05-01T09:00:00.000+00:00", inputs={"torque": "high"}),
           b"{not json",
           _line("2024-05-01T09:00:00.000+00:00", inputs={"machine_type": 3.0, "torque": True}),
           _line("2024-05-01T09:00:00.000+00:00", inputs={"machine_type": "M", "torque": 7}, prediction=None,
                 probability=None),
           b"[1, 2]")
    (chunk,) = _window(storage)
    assert chunk.rows == 4
    torque = chunk.features["torque"]
    assert torque.dtype == np.float64 and np.isnan(torque[:3]).all() and torque[3] == 7.0
    machine = chunk.features["machine_type"]
    assert machine.dtype == object and machine.tolist() == [None, None, "3", "M"]
    assert chunk.predictions.dtype == np.float64 and math.isnan(chunk.predictions[3])
    assert chunk.classes == CLASSES and chunk.probabilities is not None
    assert chunk.probabilities.shape == (4, 2) and np.isnan(chunk.probabilities[3]).all()
    assert chunk.probabilities[0].tolist() == pytest.approx([0.2, 0.8])


def test_a_missing_prediction_id_is_the_request_id_and_the_row_index() -> None:
    storage = MemoryStorage()
    _write(storage, "pm/2024-05-01/100000-a.jsonl",
           _line("2024-05-01T09:00:00.000+00:00", request_id="r1"),
           _line("2024-05-01T09:00:00.000+00:00", request_id="r1", version=2),
           _line("2024-05-01T09:00:00.000+00:00", request_id="r1"),
           _line("2024-05-01T09:00:01.000+00:00", request_id="r2"),
           _line("2024-05-01T09:00:01.000+00:00", request_id="r2", prediction_id="given"))
    (chunk,) = _window(storage)
    assert chunk.prediction_ids == ["r1-0", "r1-2", "r2-0", "given"]


def test_chunks_never_exceed_chunk_rows() -> None:
    storage = MemoryStorage()
    for blob in range(7):
        lines = [_line(f"2024-05-01T{blob:02d}:00:{i:02d}.000+00:00", prediction_id=f"{blob}-{i}") for i in range(13)]
        _write(storage, f"pm/2024-05-01/{blob:02d}0100-{blob}.jsonl", *lines)
    chunks = _window(storage, chunk_rows=10)
    assert [c.rows for c in chunks] == [10] * 9 + [1]
    assert all(c.features["torque"].size == c.rows == c.predictions.size == len(c.timestamps) for c in chunks)
    ids = [i for c in chunks for i in c.prediction_ids]
    assert len(ids) == len(set(ids)) == 91


def test_a_window_with_naive_datetimes_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next(iter_log_chunks(MemoryStorage(), "pm", 3, datetime(2024, 5, 1), END, kinds=KINDS))


def test_logged_traffic_streams_into_the_same_drift_as_in_memory_chunks(spec: TrainingSpec,
                                                                        reference: dict[str, Any]) -> None:
    storage = MemoryStorage()
    clock = [START.timestamp() + 3600.0]
    logger = PredictionLogger(lambda path, data: storage.write(PREDICTIONS, path, data), flush_rows=10**9,
                              flush_seconds=3600.0, clock=lambda: clock[0])
    frame = _traffic(spec, 1200, seed=209, drift=True)
    try:
        for number, batch in enumerate(_slices(frame, 100)):
            labels, probabilities = _model(batch)
            rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                    for row in batch[spec.feature_names].to_dict("records")]
            logger.log("pm", 3, f"req-{number}", rows, {
                "predictions": labels.tolist(),
                "probabilities": [dict(zip(CLASSES, p, strict=True)) for p in probabilities.tolist()],
            })
            logger.flush()
            clock[0] += 60.0
    finally:
        logger.close()
    chunks = list(iter_log_chunks(storage, "pm", 3, START, END, 250, kinds=feature_kinds(spec)))
    assert [c.rows for c in chunks] == [250] * 4 + [200]
    streamed = _accumulator(spec, reference)
    for chunk in chunks:
        streamed.add(chunk)
    direct = _accumulator(spec, reference)
    direct.add(_chunk(spec, frame))
    assert streamed.result().to_json() == direct.result().to_json()
    assert streamed.result().dataset_drift is True
    # without kinds the chunks type each input by its values; the drift comes out the same
    inferred = _accumulator(spec, reference)
    for chunk in iter_log_chunks(storage, "pm", 3, START, END, 250):
        inferred.add(chunk)
    assert inferred.result().to_json() == direct.result().to_json()


def test_without_kinds_every_input_is_typed_by_its_values() -> None:
    storage = MemoryStorage()
    _write(storage, "pm/2024-05-01/100000-a.jsonl",
           _line("2024-05-01T09:00:00.000+00:00", inputs={"machine_type": "L", "torque": 1.5, "gone": None}),
           _line("2024-05-01T09:00:00.000+00:00", inputs={"machine_type": None, "torque": 2, "extra": "x"}))
    (chunk,) = list(iter_log_chunks(storage, "pm", 3, START, END))
    assert list(chunk.features) == ["machine_type", "torque", "gone", "extra"]
    assert chunk.features["machine_type"].tolist() == ["L", None]
    assert chunk.features["torque"].dtype == np.float64 and chunk.features["torque"].tolist() == [1.5, 2.0]
    assert chunk.features["gone"].dtype == np.float64  # all null: numeric NaN
    assert chunk.features["extra"].tolist() == [None, "x"]


def test_the_accumulator_reads_columns_of_the_other_kind(spec: TrainingSpec, reference: dict[str, Any]) -> None:
    # inferred kinds can type an all-null categorical part as numeric NaN, a numeric part with a string as text
    frame = _traffic(spec, 300, seed=210)
    typed = _chunk(spec, frame)
    features = dict(typed.features)
    features["machine_type"] = np.full(300, np.nan)
    features["torque"] = np.array([None if math.isnan(v) else str(v) for v in typed.features["torque"]],
                                  dtype=object)
    accumulator = _accumulator(spec, reference)
    accumulator.add(LogChunk(typed.timestamps, typed.prediction_ids, features, typed.predictions,
                             typed.probabilities, typed.classes))
    body = accumulator.result().to_json()
    assert body["features"]["machine_type"]["nulls"] == 300
    assert body["features"]["torque"]["nulls"] == 300  # its numbers arrived as text: not numbers


def _assert_json_safe(body: dict[str, Any]) -> None:
    # allow_nan=False raises on NaN and infinity anywhere in the document
    json.dumps(body, allow_nan=False)


def test_a_chunk_larger_than_a_part_joins_parts_that_differ() -> None:
    # the first part has numeric predictions and no probabilities; later parts labels and probabilities
    storage = MemoryStorage()
    early = [_line(f"2024-05-01T01:00:00.{i:03d}+00:00", prediction_id=f"a{i}", prediction=i % 2, probability=None)
             for i in range(PART_ROWS + 10)]
    late = [_line(f"2024-05-01T02:00:00.{i:03d}+00:00", prediction_id=f"b{i}", prediction="yes", probability=0.25)
            for i in range(PART_ROWS)]
    _write(storage, "pm/2024-05-01/010001-a.jsonl", *early)
    _write(storage, "pm/2024-05-01/020001-b.jsonl", *late)
    (chunk,) = _window(storage, chunk_rows=10 * PART_ROWS)
    assert chunk.rows == 2 * PART_ROWS + 10
    assert chunk.prediction_ids == [f"a{i}" for i in range(PART_ROWS + 10)] + [f"b{i}" for i in range(PART_ROWS)]
    assert chunk.predictions.dtype == object
    assert chunk.predictions[:3].tolist() == ["0", "1", "0"] and chunk.predictions[-1] == "yes"
    assert chunk.classes == CLASSES and chunk.probabilities is not None
    assert np.isnan(chunk.probabilities[:PART_ROWS + 10]).all()
    assert chunk.probabilities[-1].tolist() == [0.75, 0.25]
    assert chunk.features["torque"].tolist() == [40.5] * chunk.rows
    small = _window(storage, chunk_rows=7)
    assert np.array_equal(np.concatenate([c.timestamps for c in small]), chunk.timestamps)
