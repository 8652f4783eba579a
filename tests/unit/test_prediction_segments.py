"""Prediction log segments (shared.prediction_segments): the JSON line's rows in Parquet, and every reader of the
log (monitoring windows, feedback joins, replay) getting the same rows from a segment as from JSON Lines."""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples.datasets import predictive_maintenance
from shared import feedback, paths, prediction_log, prediction_segments
from shared.clock import ManualClock
from shared.lifecycle.records import ModelVersion, VersionStatus
from shared.lifecycle.stages import Context
from shared.memory_storage import MemoryStorage
from shared.monitoring import report
from shared.monitoring.drift import DriftAccumulator, holdout_output_profile, reference_sample_from_frame
from shared.monitoring.policy import decide
from shared.monitoring.window import LogChunk, feature_kinds, iter_log_chunks
from shared.paths import PREDICTIONS
from shared.profile import profile_dataset
from shared.replay import recent_rows, replay
from shared.scoring import read_request, run_model
from shared.settings import Settings
from shared.spec import CATEGORICAL_MISSING, TrainingSpec, parse_spec
from shared.training import prepared_frame
from tests.unit import test_drift, test_replay

AT = 1_700_000_000.1239  # sub-millisecond: the timestamp is cut to milliseconds as the JSON line's is
ROWS = 40


def _columns(rows: int = ROWS) -> dict[str, np.ndarray]:
    """Model inputs as the scorer hands them to the log: [N, 1] arrays of every dtype an input can have."""
    index = np.arange(rows)
    return {
        "torque": np.where(index % 7 == 0, np.nan, index * 0.1).astype(np.float32).reshape(-1, 1),
        "speed": np.where(index % 5 == 0, np.nan, 1500 + index * 1.25).reshape(-1, 1),
        "count": (index * 1000).astype(np.int64).reshape(-1, 1),
        "type": np.array(["L", "M", CATEGORICAL_MISSING, 'ü"x\\y', "%s"] * (rows // 5), dtype=object).reshape(-1, 1),
    }


def _outputs(kind: str, rows: int = ROWS) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    if kind == "regressor":
        values = rng.normal(size=rows).astype(np.float32)
        values[::4] = np.nan
        return {"predictions": values}
    labels: np.ndarray = rng.integers(0, 2, rows)
    classes: tuple[str, ...] = ("0", "1")
    if kind == "string labels":
        labels = np.array(["fail", "ok"], dtype=object)[labels]
        classes = ("fail", "ok")
    probabilities = rng.random((rows, 2)).astype(np.float32 if kind == "string labels" else np.float64)
    return {"predictions": labels, "probabilities": probabilities, "probability_classes": classes}


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("kind", ["string labels", "integer labels", "regressor"])
@pytest.mark.parametrize("ids", [prediction_log.DefaultIds("req-1", ROWS, 7), [f"order:{i}.a" for i in range(ROWS)]])
def test_a_segment_holds_exactly_the_rows_of_the_json_lines(kind: str, ids: Any) -> None:
    inputs, outputs = _columns(), _outputs(kind)
    lines = _lines(prediction_log.columnar_lines("churn", 3, "req-1", AT, ids, inputs, outputs))
    segment = prediction_segments.encode([prediction_segments.segment_table("churn", 3, "req-1", AT, ids, inputs,
                                                                            outputs)])
    rows = list(prediction_segments.rows(segment))
    assert rows == lines
    assert rows[0]["inputs"]["torque"] is None and rows[0]["inputs"]["speed"] is None  # NaN is the line's null
    assert rows[1]["timestamp"] == "2023-11-14T22:13:20.123+00:00"
    # the file is readable by anything that reads Parquet, with its format marked
    table = pq.read_table(io.BytesIO(segment))
    assert table.schema.metadata[prediction_segments.FORMAT_KEY] == prediction_segments.FORMAT_VERSION
    assert table.column("inputs").type.field("torque").type == pa.float32()


def test_a_segment_is_much_smaller_than_its_json_lines() -> None:
    rows = 5000
    inputs = {name: np.random.default_rng(i).normal(size=(rows, 1)).round(3) for i, name in enumerate("abcdefghij")}
    ids = prediction_log.DefaultIds("batch-0123456789abcdef0123", rows)
    outputs = _outputs("integer labels", rows)
    lines = prediction_log.columnar_lines("churn", 3, "batch-0123456789abcdef0123", AT, ids, inputs, outputs)
    segment = prediction_segments.encode([prediction_segments.segment_table(
        "churn", 3, "batch-0123456789abcdef0123", AT, ids, inputs, outputs)])
    assert len(segment) * 4 < len(lines)


def test_tables_of_several_chunks_make_one_segment_of_their_rows_in_order() -> None:
    inputs, outputs = _columns(), _outputs("string labels")
    halves = [slice(0, 15), slice(15, ROWS)]
    tables = [prediction_segments.segment_table(
        "churn", 3, "req-1", AT, prediction_log.DefaultIds("req-1", h.stop - h.start, h.start),
        {k: v[h] for k, v in inputs.items()},
        {"predictions": outputs["predictions"][h], "probabilities": outputs["probabilities"][h],
         "probability_classes": outputs["probability_classes"]}) for h in halves]
    whole = prediction_log.columnar_lines("churn", 3, "req-1", AT, prediction_log.DefaultIds("req-1", ROWS), inputs,
                                          outputs)
    segment = prediction_segments.encode(tables)
    assert list(prediction_segments.rows(segment)) == _lines(whole)
    assert pq.ParquetFile(io.BytesIO(segment)).num_row_groups == 1


def test_any_log_blob_reads_by_its_name() -> None:
    inputs, outputs, ids = _columns(), _outputs("integer labels"), prediction_log.DefaultIds("r", ROWS)
    data = prediction_log.columnar_lines("churn", 3, "r", AT, ids, inputs, outputs)
    segment = prediction_segments.encode([prediction_segments.segment_table("churn", 3, "r", AT, ids, inputs,
                                                                            outputs)])
    as_lines = list(prediction_segments.blob_rows("churn/2023-11-14/221320-r.jsonl", data))
    assert as_lines == list(prediction_segments.blob_rows("churn/2023-11-14/221320-r.parquet", segment))
    assert len(as_lines) == ROWS


@pytest.mark.parametrize("data", [b"not parquet", b"PAR1garbagePAR1", b""])
def test_bytes_that_are_no_segment_are_refused_as_such(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a prediction log segment"):
        list(prediction_segments.batches(data))


def test_a_parquet_file_without_the_log_s_columns_is_refused() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2]}), sink)
    with pytest.raises(ValueError, match="no columns"):
        list(prediction_segments.batches(sink.getvalue()))


@pytest.mark.parametrize("at", [AT, 1_700_000_000.0, 1_700_000_000.9995, 1_714_521_599.999999, 0.0015])
def test_segment_timestamps_are_the_seconds_the_json_line_s_string_reads_as(at: float) -> None:
    table = prediction_segments.segment_table("m", 1, "r", at, ["a"], {"x": np.zeros((1, 1))}, {
        "predictions": np.zeros(1)})
    line = _lines(prediction_log.columnar_lines("m", 1, "r", at, ["a"], {"x": np.zeros((1, 1))},
                                                {"predictions": np.zeros(1)}))[0]
    seconds = prediction_segments.epoch_seconds(table.to_batches()[0])
    assert seconds.tolist() == [datetime.fromisoformat(line["timestamp"]).timestamp()]


# ---------------------------------------------------------------------------------------------
# Monitoring: a window of JSON Lines and segments is the window of the same rows as JSON Lines

MODEL = "pm"
VERSION = 3
START = datetime(2024, 5, 1, tzinfo=UTC)
END = START + timedelta(days=1)
CLASSES = ("0", "1")
REQUEST_ROWS = 100


@pytest.fixture(scope="module")
def spec() -> TrainingSpec:
    return parse_spec(test_drift.SPEC_PATH.read_bytes(), test_drift.SPEC_PATH.name)


def _inputs_of(frame: pd.DataFrame, spec: TrainingSpec) -> dict[str, np.ndarray]:
    """The feeds the scorer would log for these prepared rows (a missing category is the model's marker)."""
    inputs = {}
    for feature in spec.features:
        column = frame[feature.name]
        if feature.kind == "numeric":
            inputs[feature.name] = column.to_numpy(np.float64).reshape(-1, 1)
        else:
            inputs[feature.name] = column.map(lambda v: CATEGORICAL_MISSING if v is None else v) \
                .to_numpy(object).reshape(-1, 1)
    return inputs


Layout = Callable[[int], bool]  # request number -> written as a segment?


def _log(storage: MemoryStorage, spec: TrainingSpec, frame: pd.DataFrame, as_segment: Layout,
         version: int = VERSION, first: datetime = START + timedelta(hours=1)) -> list[str]:
    """Log the frame's rows in requests of REQUEST_ROWS, a minute apart, each as JSON Lines or as a segment."""
    ids: list[str] = []
    for number, begin in enumerate(range(0, len(frame), REQUEST_ROWS)):
        part = frame.iloc[begin:begin + REQUEST_ROWS]
        labels, probabilities = test_drift._model(part)
        rid = f"req-{version}-{number}"
        at = (first + timedelta(minutes=number)).timestamp()
        request_ids = prediction_log.DefaultIds(rid, len(part))
        outputs = {"predictions": labels, "probabilities": probabilities, "probability_classes": CLASSES}
        inputs = _inputs_of(part, spec)
        if as_segment(number):
            data = prediction_segments.encode([prediction_segments.segment_table(
                MODEL, version, rid, at, request_ids, inputs, outputs)])
            name = prediction_log.log_blob_path(MODEL, at, rid, suffix=prediction_segments.SUFFIX)
        else:
            data = prediction_log.columnar_lines(MODEL, version, rid, at, request_ids, inputs, outputs)
            name = prediction_log.log_blob_path(MODEL, at, rid)
        storage.write(PREDICTIONS, name, data)
        ids += list(request_ids)
    return ids


def _traffic(spec: TrainingSpec) -> pd.DataFrame:
    frame = prepared_frame(predictive_maintenance(1230, seed=31, drift=True), spec)
    frame.loc[::17, "machine_type"] = None
    frame.loc[::13, "torque"] = np.nan
    return frame


def _same_chunks(ours: list[LogChunk], theirs: list[LogChunk]) -> None:
    assert [c.rows for c in ours] == [c.rows for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.prediction_ids == b.prediction_ids and a.classes == b.classes
        assert a.timestamps.tolist() == b.timestamps.tolist()
        assert list(a.features) == list(b.features)
        for name in a.features:
            assert a.features[name].dtype == b.features[name].dtype
            assert pd.Series(a.features[name]).equals(pd.Series(b.features[name])), name
        assert a.predictions.dtype == b.predictions.dtype
        assert pd.Series(a.predictions).equals(pd.Series(b.predictions))
        assert (a.probabilities is None) == (b.probabilities is None)
        if a.probabilities is not None and b.probabilities is not None:
            assert np.array_equal(a.probabilities, b.probabilities, equal_nan=True)


@pytest.mark.parametrize("layout", [lambda n: n % 2 == 1, lambda n: True, lambda n: n in (0, 5)],
                         ids=["alternate", "all segments", "two segments"])
@pytest.mark.parametrize("with_kinds", [True, False])
def test_a_window_of_json_lines_and_segments_has_the_chunks_of_the_same_rows_as_json_lines(
        spec: TrainingSpec, layout: Layout, with_kinds: bool) -> None:
    lines, mixed = MemoryStorage(), MemoryStorage()
    frame = _traffic(spec)
    assert _log(lines, spec, frame, lambda n: False) == _log(mixed, spec, frame, layout)
    kinds = feature_kinds(spec) if with_kinds else None
    ours = list(iter_log_chunks(mixed, MODEL, VERSION, START, END, 250, kinds=kinds))
    theirs = list(iter_log_chunks(lines, MODEL, VERSION, START, END, 250, kinds=kinds))
    assert [c.rows for c in ours] == [250] * 4 + [230]  # chunks run across blobs of both formats
    _same_chunks(ours, theirs)


def test_a_segment_s_rows_are_kept_by_version_and_window_and_chunks_never_exceed_chunk_rows(
        spec: TrainingSpec) -> None:
    storage = MemoryStorage()
    frame = _traffic(spec).head(330)
    kept = _log(storage, spec, frame, lambda n: True)  # 4 segments: 100, 100, 100, 30 rows
    _log(storage, spec, frame.head(120), lambda n: True, version=2)
    _log(storage, spec, frame.head(50), lambda n: True, first=START - timedelta(minutes=3))  # scored before START
    chunks = list(iter_log_chunks(storage, MODEL, VERSION, START, END, 64, kinds=feature_kinds(spec)))
    assert [c.rows for c in chunks] == [64] * 5 + [10]
    assert [i for c in chunks for i in c.prediction_ids] == kept
    assert all(c.features["torque"].size == c.rows == c.predictions.size == len(c.timestamps) for c in chunks)
    every_version = list(iter_log_chunks(storage, MODEL, None, START, END, 1000))
    assert sum(c.rows for c in every_version) == 330 + 120


def test_a_damaged_segment_is_skipped_and_the_rest_of_the_window_read(
        spec: TrainingSpec, caplog: pytest.LogCaptureFixture) -> None:
    storage = MemoryStorage()
    kept = _log(storage, spec, _traffic(spec).head(200), lambda n: n == 0)
    damaged = prediction_log.log_blob_path(MODEL, (START + timedelta(hours=2)).timestamp(), "bad", suffix=".parquet")
    storage.write(PREDICTIONS, damaged, b"PAR1 not really")
    chunks = list(iter_log_chunks(storage, MODEL, VERSION, START, END, kinds=feature_kinds(spec)))
    assert [i for c in chunks for i in c.prediction_ids] == kept
    assert any(damaged in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def _monitoring_report(storage: MemoryStorage, spec: TrainingSpec, ids: list[str]) -> dict[str, Any]:
    """The monitoring report of the day's window over this log: drift, labels joined, live metrics, decision."""
    train = prepared_frame(predictive_maintenance(2000, seed=7), spec)
    holdout = prepared_frame(predictive_maintenance(500, seed=8), spec)
    sink = io.BytesIO()
    train.to_parquet(sink, index=False)
    storage.write(paths.MLOPS, paths.prepared_data(MODEL, "h1"), sink.getvalue())
    storage.write_json(paths.MLOPS, paths.prepared_profile(MODEL, "h1"), profile_dataset(train, spec))
    labels, probabilities = test_drift._model(holdout)
    champion = ModelVersion(model=MODEL, version=VERSION, status=VersionStatus.PROMOTED,
                            created=START - timedelta(days=3), task="classification", classes=[0, 1],
                            lineage={"data_hash": "h1"},
                            holdout_outputs=holdout_output_profile("classification", labels, probabilities, CLASSES))
    clock = ManualClock(END + timedelta(minutes=5))
    truth = test_drift._model(_traffic(spec))[0]
    feedback.record(storage, clock, MODEL, [feedback.FeedbackLabel(pid, int(truth[i]))
                                            for i, pid in enumerate(ids) if i % 3 == 0])
    ctx = Context(storage=storage, settings=Settings.from_env({}), clock=clock)
    window = report._measure(ctx, spec, champion, START, END)
    decision = decide(spec.monitoring.retrain, window.facts(END, spec, champion), [])
    body = window.report(spec, champion, decision, "timer", clock.now())
    return {**body, "joined": window.joined_ids}


def test_a_window_of_json_lines_and_segments_gives_the_report_of_the_same_rows_as_json_lines(
        spec: TrainingSpec) -> None:
    lines, mixed = MemoryStorage(), MemoryStorage()
    frame = _traffic(spec)
    ids = _log(lines, spec, frame, lambda n: False)
    assert _log(mixed, spec, frame, lambda n: n % 3 != 0) == ids
    ours, theirs = _monitoring_report(mixed, spec, ids), _monitoring_report(lines, spec, ids)
    assert ours == theirs
    assert ours["window"]["rows"] == len(frame) and ours["labelled_rows"] == len(ids[::3])
    assert ours["joined"] == ids[::3]  # feedback joins batch rows by the ids in the segments
    assert ours["dataset_drift"] is True


def test_drift_streamed_from_segments_matches_the_rows_in_memory(spec: TrainingSpec) -> None:
    storage = MemoryStorage()
    frame = _traffic(spec)
    _log(storage, spec, frame, lambda n: True)
    train = prepared_frame(predictive_maintenance(2000, seed=7), spec)
    reference = (profile_dataset(train, spec), reference_sample_from_frame(train, spec),
                 holdout_output_profile("classification", *test_drift._model(train), CLASSES))
    streamed, direct = DriftAccumulator(spec, *reference), DriftAccumulator(spec, *reference)
    for chunk in iter_log_chunks(storage, MODEL, VERSION, START, END, 250, kinds=feature_kinds(spec)):
        streamed.add(chunk)
    direct.add(test_drift._chunk(spec, frame))
    assert streamed.result().to_json() == direct.result().to_json()


# ---------------------------------------------------------------------------------------------
# Replay: the champion's newest rows read from segments as from JSON Lines


def _replay_traffic(as_segment: Layout) -> tuple[MemoryStorage, list[str]]:
    """test_replay's traffic (the example classifier's requests of REQUEST_ROWS), logged in either format."""
    storage = MemoryStorage()
    model = test_replay._load(test_replay._trained("champion"), test_replay.MODEL, test_replay.CHAMPION)
    frame = predictive_maintenance(test_replay.TRAFFIC_ROWS, seed=11).drop(columns=["failure"])
    frame.loc[:2, "machine_type"] = None
    records = test_replay._records(frame)
    ids: list[str] = []
    for number, begin in enumerate(range(0, len(records), test_replay.REQUEST_ROWS)):
        body = json.dumps({"dataframe_records": records[begin:begin + test_replay.REQUEST_ROWS]}).encode()
        request = read_request(body, "application/json", model.signature, 10**7)
        labels, probabilities, _ = run_model(model, request.inputs)
        rid = f"req-{number}"
        request_ids = prediction_log.DefaultIds(rid, request.rows)
        outputs = {"predictions": labels, "probabilities": probabilities,
                   "probability_classes": model.signature.class_keys}
        at = (test_replay.NOW - timedelta(hours=2) + timedelta(minutes=number)).timestamp()
        if as_segment(number):
            data = prediction_segments.encode([prediction_segments.segment_table(
                model.name, model.version, rid, at, request_ids, request.inputs, outputs)])
            name = prediction_log.log_blob_path(model.name, at, rid, suffix=prediction_segments.SUFFIX)
        else:
            data = prediction_log.columnar_lines(model.name, model.version, rid, at, request_ids, request.inputs,
                                                 outputs)
            name = prediction_log.log_blob_path(model.name, at, rid)
        storage.write(PREDICTIONS, name, data)
        ids += list(request_ids)
    return storage, ids


@pytest.mark.parametrize("limit", [10_000, 50, test_replay.REQUEST_ROWS + 7])
def test_replay_reads_the_newest_rows_of_segments_as_it_reads_json_lines(limit: int) -> None:
    lines, ids = _replay_traffic(lambda n: False)
    mixed, mixed_ids = _replay_traffic(lambda n: n % 2 == 0)
    assert mixed_ids == ids
    ours = recent_rows(mixed, test_replay.MODEL, test_replay.CHAMPION, limit, test_replay.NOW, 7)
    theirs = recent_rows(lines, test_replay.MODEL, test_replay.CHAMPION, limit, test_replay.NOW, 7)
    assert ours == theirs
    assert [r.prediction_id for r in ours] == ids[::-1][:limit]  # newest first
    assert any(r.inputs["machine_type"] == CATEGORICAL_MISSING for r in ours) or limit < len(ids)


def test_a_replay_over_segments_reports_what_it_reports_over_json_lines() -> None:
    lines, _ = _replay_traffic(lambda n: False)
    segments, _ = _replay_traffic(lambda n: True)
    for challenger in ("champion", "no_h", "no_tool_wear"):
        onnx = test_replay._trained(challenger)
        ours = replay(segments, test_replay.MODEL, test_replay.CHAMPION, onnx, challenger_version=4,
                      now=test_replay.NOW)
        theirs = replay(lines, test_replay.MODEL, test_replay.CHAMPION, onnx, challenger_version=4,
                        now=test_replay.NOW)
        assert ours == theirs and ours.rows == test_replay.TRAFFIC_ROWS, challenger


def test_a_segment_of_another_version_is_no_traffic_for_the_champion() -> None:
    storage, ids = _replay_traffic(lambda n: True)
    assert recent_rows(storage, test_replay.MODEL, test_replay.CHAMPION + 1, 100, test_replay.NOW, 7) == []
    assert len(recent_rows(storage, test_replay.MODEL, test_replay.CHAMPION, 10_000, test_replay.NOW, 7)) == len(ids)
