"""Real traffic replay: the champion's logged rows, scored by the real endpoint code, replayed against challengers."""
from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from examples.datasets import predictive_maintenance
from shared.learner import Learner
from shared.memory_storage import MemoryStorage
from shared.paths import PREDICTIONS
from shared.prediction_log import PredictionLogger
from shared.replay import BATCH_ROWS, recent_rows, replay, request_record
from shared.scoring import LoadedModel, load_model, predict, read_request
from shared.spec import CATEGORICAL_MISSING, TrainingSpec, parse_spec
from tests.unit import onnx_fixtures

SPEC_PATH = Path(__file__).resolve().parents[2] / "examples" / "specs" / "predictive-maintenance.yaml"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MODEL = "predictive-maintenance"
CHAMPION = 3
TRAFFIC_ROWS = 300
REQUEST_ROWS = 20


def _spec(change: Any = None) -> TrainingSpec:
    data = parse_spec(SPEC_PATH.read_bytes(), SPEC_PATH.name).model_dump(mode="json", exclude_none=True)
    data["estimator"] = {"type": "logistic_regression", "params": {"max_iter": 500}}  # seconds, not a forest
    if change is not None:
        change(data)
    return parse_spec(json.dumps(data), "spec.json")


@functools.cache
def _trained(variant: str) -> bytes:
    """ONNX bytes of the example model trained as the pipeline trains it, for one spec variant."""
    frame = predictive_maintenance(1500, seed=7)
    if variant == "champion":
        spec = _spec()
    elif variant == "no_h":  # the challenger's spec no longer allows machine type H, and its data has none
        spec = _spec(lambda d: d["features"][0].update(allowed=["L", "M"]))
        frame = frame[frame.machine_type != "H"].reset_index(drop=True)
    elif variant == "no_tool_wear":  # an input removed
        spec = _spec(lambda d: d.update(features=[f for f in d["features"] if f["name"] != "tool_wear"]))
    else:  # "humidity": an input added that the champion's clients never send
        spec = _spec(lambda d: d["features"].append({"name": "humidity", "kind": "numeric"}))
        frame = frame.assign(humidity=np.random.default_rng(1).uniform(20, 80, len(frame)).round(1))
    learner = Learner()
    result = learner.fit(frame, spec, None)
    return learner.export(result.pipeline, spec, result.holdout)


def _load(onnx: bytes, name: str, version: int) -> LoadedModel:
    return load_model(onnx, onnx_fixtures.sha256(onnx), name, version)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in frame.to_dict("records")]


def _log_traffic(storage: MemoryStorage, model: LoadedModel, records: list[dict[str, Any]],
                 start: datetime = NOW - timedelta(hours=2)) -> list[str]:
    """Score records in requests of REQUEST_ROWS through the endpoint's parser and log them as the app does.

    One blob per request, a minute apart; returns the prediction ids in the order they were scored.
    """
    clock = [start.timestamp()]
    logger = PredictionLogger(lambda path, data: storage.write(PREDICTIONS, path, data), flush_rows=10**9,
                              flush_seconds=10**6, clock=lambda: clock[0])
    ids: list[str] = []
    try:
        for number in range(0, len(records), REQUEST_ROWS):
            body = orjson.dumps({"dataframe_records": records[number:number + REQUEST_ROWS]})
            request = read_request(body, "application/json", model.signature, 10**7)
            rid = f"req-{number}"
            request_ids = [f"{rid}-{i}" for i in range(request.rows)]
            result = predict(model, request.inputs, request_ids)
            logger.log(model.name, model.version, rid, request.inputs, result, request_ids)
            logger.flush()
            ids += request_ids
            clock[0] += 60.0
    finally:
        logger.close()
    return ids


@pytest.fixture(scope="module")
def traffic() -> tuple[MemoryStorage, list[str]]:
    """The classifier champion's log: TRAFFIC_ROWS rows of fresh telemetry, a few with a missing machine type."""
    storage = MemoryStorage()
    frame = predictive_maintenance(TRAFFIC_ROWS, seed=11).drop(columns=["failure"])
    frame.loc[:2, "machine_type"] = None
    ids = _log_traffic(storage, _load(_trained("champion"), MODEL, CHAMPION), _records(frame))
    return storage, ids


def test_the_log_holds_missing_categories_as_the_marker_and_replay_sends_them_as_null(
        traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, _ = traffic
    rows = recent_rows(storage, MODEL, CHAMPION, 10_000, NOW, 7)
    markers = [r for r in rows if r.inputs["machine_type"] == CATEGORICAL_MISSING]
    assert len(markers) >= 3  # the three set here plus the dataset's own dropouts
    assert request_record(markers[0].inputs)["machine_type"] is None


def test_an_identical_challenger_answers_every_row_the_same(traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, _ = traffic
    report = replay(storage, MODEL, CHAMPION, _trained("champion"), challenger_version=4, now=NOW)
    assert report.to_json() == {"rows": TRAFFIC_ROWS, "failed": 0, "breaking": [], "changed_predictions": 0.0,
                                "output_shift": 0.0, "status": "ok"}
    assert TRAFFIC_ROWS > BATCH_ROWS  # more than one batch was replayed


def test_a_challenger_that_no_longer_allows_a_logged_category_still_answers_it_with_shifted_outputs(
        traffic: tuple[MemoryStorage, list[str]]) -> None:
    # The parser checks columns and types, not the spec's allowed categories (the signature does not carry
    # them), and the exported encoder ignores an unknown category: not breaking, but the outputs move.
    storage, _ = traffic
    logged = recent_rows(storage, MODEL, CHAMPION, 10_000, NOW, 7)
    assert any(r.inputs["machine_type"] == "H" for r in logged)
    report = replay(storage, MODEL, CHAMPION, _trained("no_h"), challenger_version=4, now=NOW)
    assert (report.rows, report.failed, report.status) == (TRAFFIC_ROWS, 0, "ok")
    assert report.output_shift is not None and report.output_shift > 0
    assert report.changed_predictions is not None and 0 <= report.changed_predictions <= 1


def test_a_challenger_without_a_logged_input_cannot_answer_because_unknown_columns_are_refused(
        traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, ids = traffic
    report = replay(storage, MODEL, CHAMPION, _trained("no_tool_wear"), challenger_version=4, now=NOW)
    assert (report.rows, report.failed) == (TRAFFIC_ROWS, TRAFFIC_ROWS)
    assert len(report.breaking) == 5
    assert all("unknown columns ['tool_wear']" in b.error for b in report.breaking)
    assert report.breaking[0].prediction_id == ids[-1]  # newest first
    assert report.changed_predictions is None and report.output_shift is None
    assert report.to_json()["breaking"][0] == {"prediction_id": ids[-1], "error": report.breaking[0].error}


def test_a_challenger_needing_a_new_input_cannot_answer_and_the_error_names_the_column(
        traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, _ = traffic
    report = replay(storage, MODEL, CHAMPION, _trained("humidity"), challenger_version=4, now=NOW)
    assert report.failed == report.rows == TRAFFIC_ROWS
    assert "missing columns ['humidity']" in report.breaking[0].error


def test_a_batch_error_is_traced_to_the_rows_that_caused_it() -> None:
    storage = MemoryStorage()
    champion = _trained("champion")
    frame = predictive_maintenance(40, seed=12).drop(columns=["failure"])
    _log_traffic(storage, _load(champion, MODEL, CHAMPION), _records(frame))
    # a line whose torque the parser refuses (not something the logger writes; it stands for any bad row)
    line = {"request_id": "odd", "prediction_id": "odd-0", "model": MODEL, "version": CHAMPION,
            "timestamp": (NOW - timedelta(minutes=5)).isoformat(),
            "inputs": {**_records(frame.head(1))[0], "torque": "n/a"},
            "outputs": {"predictions": 0, "probabilities": {"0": 0.9, "1": 0.1}}}
    storage.write(PREDICTIONS, f"{MODEL}/2024-05-01/115500-odd.jsonl", orjson.dumps(line) + b"\n")
    report = replay(storage, MODEL, CHAMPION, champion, challenger_version=4, now=NOW)
    assert (report.rows, report.failed, report.changed_predictions) == (41, 1, 0.0)
    assert report.breaking[0].prediction_id == "odd-0"
    assert "column 'torque'" in report.breaking[0].error and "expected a number" in report.breaking[0].error


def test_limit_takes_the_newest_rows_only(traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, ids = traffic
    assert [r.prediction_id for r in recent_rows(storage, MODEL, CHAMPION, 50, NOW, 7)] == ids[::-1][:50]
    report = replay(storage, MODEL, CHAMPION, _trained("no_tool_wear"), challenger_version=4, limit=50, now=NOW)
    assert (report.rows, report.failed) == (50, 50)


def test_no_logged_traffic_of_the_champion_version_in_the_lookback_is_no_traffic(
        traffic: tuple[MemoryStorage, list[str]]) -> None:
    storage, _ = traffic
    champion = _trained("champion")
    empty = {"rows": 0, "failed": 0, "breaking": [], "changed_predictions": None, "output_shift": None,
             "status": "no_traffic"}
    assert replay(MemoryStorage(), MODEL, CHAMPION, champion, challenger_version=4, now=NOW).to_json() == empty
    assert replay(storage, MODEL, CHAMPION + 1, champion, challenger_version=4, now=NOW).to_json() == empty
    assert replay(storage, "other-model", CHAMPION, champion, challenger_version=4, now=NOW).to_json() == empty
    later = NOW + timedelta(days=8)
    assert replay(storage, MODEL, CHAMPION, champion, challenger_version=4, now=later).to_json() == empty
    earlier = NOW - timedelta(hours=3)  # rows logged after `now` are not replayed
    assert replay(storage, MODEL, CHAMPION, champion, challenger_version=4, now=earlier).to_json() == empty


def test_a_regressor_challenger_reports_its_shift_relative_to_the_champions_spread() -> None:
    storage = MemoryStorage()
    frame = onnx_fixtures.training_frame(rows=60, seed=5)[list(onnx_fixtures.FEATURES)]
    champion = onnx_fixtures.regressor()
    _log_traffic(storage, _load(champion, "wear", 1), _records(frame))
    same = replay(storage, "wear", 1, champion, challenger_version=2, now=NOW)
    assert (same.rows, same.failed, same.changed_predictions, same.output_shift) == (60, 0, 0.0, 0.0)
    other = replay(storage, "wear", 1, onnx_fixtures.regressor(seed=1), challenger_version=2, now=NOW)
    assert (other.rows, other.failed) == (60, 0)
    assert other.changed_predictions is not None and other.changed_predictions > 0.9  # two lines may cross
    assert other.output_shift is not None and 0 < other.output_shift < 1


def test_bad_arguments_are_refused() -> None:
    champion = onnx_fixtures.regressor()
    with pytest.raises(ValueError, match="timezone-aware"):
        replay(MemoryStorage(), "wear", 1, champion, challenger_version=2, now=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="limit=0"):
        replay(MemoryStorage(), "wear", 1, champion, challenger_version=2, limit=0, now=NOW)
