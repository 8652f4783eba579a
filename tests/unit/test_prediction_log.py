"""Prediction logger: the line format, prediction ids, batching by rows and time, sampling, sink failures,
bounded buffer, close."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import names, prediction_log, prediction_segments
from shared.prediction_log import PredictionLogger, default_prediction_ids

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class MemorySink:
    """Collects blobs; fails the next `fail` writes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.calls = 0
        self.fail = 0
        self._lock = threading.Lock()

    def __call__(self, path: str, data: bytes) -> None:
        with self._lock:
            self.calls += 1
            if self.fail:
                self.fail -= 1
                raise ConnectionError("storage down")
            self.blobs[path] = data

    def lines(self) -> list[dict[str, Any]]:
        """Every row written, in write order, as its JSON line reads (a segment's rows too)."""
        with self._lock:
            return [row for path, data in self.blobs.items() for row in prediction_segments.blob_rows(path, data)]


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def _inputs(rows: int) -> dict[str, np.ndarray]:
    return {
        "torque": np.arange(rows, dtype=np.float32).reshape(-1, 1),
        "type": np.array(["L"] * rows, dtype=object).reshape(-1, 1),
    }


def _outputs(rows: int) -> dict[str, Any]:
    return {
        "predictions": ["ok"] * rows,
        "probabilities": [{"fail": 0.25, "ok": 0.75}] * rows,
        "model": {"name": "churn", "version": 3},
    }


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture()
def make(sink: MemorySink, clock: FakeClock) -> Iterator[Callable[..., PredictionLogger]]:
    loggers: list[PredictionLogger] = []

    def build(**kwargs: Any) -> PredictionLogger:
        kwargs.setdefault("flush_seconds", 3600.0)  # the thread's real-time wait never fires in a test
        logger = PredictionLogger(sink, clock=clock, **kwargs)
        loggers.append(logger)
        return logger

    yield build
    for logger in loggers:
        logger.close()


def test_log_only_buffers_and_flush_writes_one_jsonl_blob_per_model(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make()
    logger.log("churn", 3, "req-1", _inputs(2), _outputs(2))
    logger.log("wear", 1, "req-2", [{"torque": 1.5}], {"predictions": [2.0], "model": {}})
    assert sink.calls == 0
    assert logger.flush() == 3
    assert sorted(p.split("/")[0] for p in sink.blobs) == ["churn", "wear"]
    churn = next(p for p in sink.blobs if p.startswith("churn/"))
    assert churn.startswith("churn/2023-11-14/221320-") and churn.endswith(".jsonl")


def test_each_line_is_one_row_with_its_prediction_id_inputs_and_outputs(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make()
    inputs = _inputs(2)
    inputs["torque"][1, 0] = np.nan
    logger.log("churn", 3, "req-1", inputs, {**_outputs(2), "prediction_ids": ["t-1", "t-2"]}, ["t-1", "t-2"])
    logger.flush()
    (blob,) = sink.blobs.values()
    assert blob.endswith(b"\n") and blob.isascii() and blob.count(b"\n") == 2
    assert sink.lines() == [
        {
            "request_id": "req-1", "prediction_id": "t-1", "model": "churn", "version": 3,
            "timestamp": "2023-11-14T22:13:20.000+00:00",
            "inputs": {"torque": 0.0, "type": "L"},
            "outputs": {"predictions": "ok", "probabilities": {"fail": 0.25, "ok": 0.75}},
        },
        {
            "request_id": "req-1", "prediction_id": "t-2", "model": "churn", "version": 3,
            "timestamp": "2023-11-14T22:13:20.000+00:00",
            "inputs": {"torque": None, "type": "L"},
            "outputs": {"predictions": "ok", "probabilities": {"fail": 0.25, "ok": 0.75}},
        },
    ]
    keys = ["request_id", "prediction_id", "model", "version", "timestamp", "inputs", "outputs"]
    assert all(list(line) == keys for line in sink.lines())  # in this order, and nothing else


def test_a_regression_line_has_only_predictions_in_its_outputs(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make()
    outputs = {"predictions": [1.5, None], "prediction_ids": ["a", "b"], "model": {"name": "wear", "version": 1}}
    logger.log("wear", 1, "r", {"torque": np.array([[1.0], [2.0]])}, outputs, ["a", "b"])
    logger.flush()
    assert [(line["prediction_id"], line["outputs"]) for line in sink.lines()] == [
        ("a", {"predictions": 1.5}), ("b", {"predictions": None})]


def test_without_prediction_ids_each_row_gets_the_request_id_and_its_index(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make()
    logger.log("churn", 3, "req-1", _inputs(3), _outputs(3))
    logger.log("churn", 3, "req-2", [{"torque": 1.5}], {"predictions": ["ok"]})
    logger.flush()
    assert [line["prediction_id"] for line in sink.lines()] == ["req-1-0", "req-1-1", "req-1-2", "req-2-0"]
    assert default_prediction_ids("a" * 100, 10_000)[-1] == "a" * 100 + "-9999"
    assert all(names.PREDICTION_ID.fullmatch(pid) for pid in default_prediction_ids("a" * 100, 10_000))


def test_prediction_ids_that_do_not_match_the_rows_are_refused_on_the_callers_thread(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make()
    with pytest.raises(ValueError, match=r"2 prediction ids for 3 rows \(request_id=req-1\)"):
        logger.log("churn", 3, "req-1", _inputs(3), _outputs(3), ["a", "b"])
    assert logger.flush() == 0 and sink.calls == 0


def test_the_thread_flushes_once_flush_rows_are_buffered(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    logger = make(flush_rows=10)
    logger.log("churn", 3, "a", _inputs(6), _outputs(6))
    assert sink.calls == 0
    logger.log("churn", 3, "b", _inputs(4), _outputs(4))
    _until(lambda: len(sink.lines()) == 10)
    assert len(sink.blobs) == 1


def test_the_thread_flushes_after_flush_seconds(
    make: Callable[..., PredictionLogger], sink: MemorySink, clock: FakeClock
) -> None:
    logger = make(flush_seconds=5.0)
    logger.log("churn", 3, "a", _inputs(1), _outputs(1))
    clock.now += 4.9
    logger.log("churn", 3, "b", _inputs(1), _outputs(1))
    assert sink.calls == 0
    clock.now += 0.1
    logger.log("churn", 3, "c", _inputs(1), _outputs(1))
    _until(lambda: len(sink.lines()) == 3)


def test_sampling_keeps_requests_whose_draw_is_below_the_rate(
    make: Callable[..., PredictionLogger], sink: MemorySink
) -> None:
    draws = iter([0.05, 0.5, 0.09, 0.99, 0.1])
    logger = make(sample_rate=0.1, rng=lambda: next(draws))
    kept = [logger.log("churn", 3, f"r{i}", _inputs(2), _outputs(2)) for i in range(5)]
    assert kept == [True, False, True, False, False]
    logger.flush()
    assert sorted({line["request_id"] for line in sink.lines()}) == ["r0", "r2"]


def test_a_failed_write_is_kept_and_retried_under_the_same_path(
    make: Callable[..., PredictionLogger], sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    logger = make()
    logger.log("churn", 3, "a", _inputs(2), _outputs(2))
    sink.fail = 1
    with caplog.at_level("ERROR", logger="shared.prediction_log"):
        assert logger.flush() == 0
    assert "will retry" in caplog.text
    logger.log("churn", 3, "b", _inputs(1), _outputs(1))
    assert logger.flush() == 3
    assert sink.calls == 3 and len(sink.blobs) == 2
    assert sorted(line["request_id"] for line in sink.lines()) == ["a", "a", "b"]


def test_beyond_the_buffer_bound_the_oldest_rows_are_dropped_and_counted(
    make: Callable[..., PredictionLogger], sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    logger = make(max_buffer_rows=5, flush_rows=1000)
    sink.fail = 1
    logger.log("churn", 3, "old", _inputs(3), _outputs(3))
    logger.flush()  # fails; 3 rows held for retry
    logger.log("churn", 3, "mid", _inputs(2), _outputs(2))
    logger.log("churn", 3, "new", _inputs(2), _outputs(2))
    assert logger.dropped_rows == 3
    with caplog.at_level("WARNING", logger="shared.prediction_log"):
        assert logger.flush() == 4
    assert "dropped 3 rows" in caplog.text
    assert sorted({line["request_id"] for line in sink.lines()}) == ["mid", "new"]


def test_close_flushes_what_is_left_and_is_idempotent(make: Callable[..., PredictionLogger], sink: MemorySink) -> None:
    logger = make()
    logger.log("churn", 3, "a", _inputs(2), _outputs(2))
    logger.close()
    logger.close()
    assert len(sink.lines()) == 2
    assert logger.log("churn", 3, "late", _inputs(1), _outputs(1)) is False
    assert not logger._thread.is_alive()


def test_logging_from_many_threads_loses_nothing(make: Callable[..., PredictionLogger], sink: MemorySink) -> None:
    logger = make(flush_rows=50)

    def worker(n: int) -> None:
        for i in range(100):
            logger.log("churn", 3, f"{n}-{i}", _inputs(1), _outputs(1))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    logger.close()
    assert len({line["request_id"] for line in sink.lines()}) == 400


@pytest.mark.parametrize("rows", [1, 3, 64, 500])
def test_array_outputs_are_logged_column_by_column_with_the_same_lines(
    make: Callable[..., PredictionLogger], sink: MemorySink, rows: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Array outputs (what scoring hands the logger) are written column by column, and give the same lines as the
    JSON answer's lists, which are written line by line."""
    rng = np.random.default_rng(rows)
    inputs = {"torque": rng.normal(40, 10, (rows, 1)).astype(np.float32),
              "speed": np.where(rng.random((rows, 1)) < 0.1, np.nan, rng.normal(1500, 99, (rows, 1))),
              "type": rng.choice(["L", "M", "ü"], (rows, 1)).astype(object)}
    p = rng.random(rows).astype(np.float32)
    probabilities = np.stack([p, 1 - p], axis=1)
    labels = np.where(p > 0.5, "fail", "ok").astype(object)
    ids = [f"id-{i}" for i in range(rows)]
    columns = {"predictions": labels, "probabilities": probabilities, "probability_classes": ("fail", "ok"),
               "prediction_ids": ids, "model": {"name": "churn", "version": 3}}
    answer = {"predictions": labels.tolist(), "prediction_ids": ids, "model": {"name": "churn", "version": 3},
              "probabilities": [{"fail": a, "ok": b} for a, b in probabilities.tolist()]}
    columnar: list[int] = []
    real = prediction_log._columnar_lines

    def spy(*args: Any) -> bytes:
        columnar.append(len(args[3]))
        return real(*args)

    monkeypatch.setattr(prediction_log, "_columnar_lines", spy)
    logger = make(flush_rows=10**6)
    logger.log("churn", 3, "req-a", inputs, columns, ids)
    logger.flush()
    from_arrays = sink.lines()
    sink.blobs.clear()
    logger.log("churn", 3, "req-a", inputs, answer, ids)
    logger.flush()
    from_lists = sink.lines()
    assert len(from_arrays) == rows and from_arrays == from_lists
    assert columnar == [rows]  # the arrays' flush only
    assert [list(line) for line in from_arrays[:1]] == [["request_id", "prediction_id", "model", "version",
                                                         "timestamp", "inputs", "outputs"]]
    assert from_arrays[0]["inputs"]["speed"] is None or isinstance(from_arrays[0]["inputs"]["speed"], float)


def test_big_requests_go_into_segments_of_requests_alike_with_the_rows_their_lines_would_have(
    make: Callable[..., PredictionLogger], sink: MemorySink, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = prediction_log.SEGMENT_ROWS
    rng = np.random.default_rng(7)

    def request(n: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        p = rng.random(n).astype(np.float32)
        inputs = {"torque": np.where(rng.random((n, 1)) < 0.1, np.nan, rng.normal(40, 9, (n, 1))).astype(np.float32),
                  "type": rng.choice(["L", "missing", "ü"], (n, 1)).astype(object)}
        return inputs, {"predictions": np.where(p > 0.5, "fail", "ok").astype(object),
                        "probabilities": np.stack([p, 1 - p], axis=1), "probability_classes": ("fail", "ok")}

    inputs, outputs = request(rows)
    wide = {**outputs, "probabilities": outputs["probabilities"].astype(np.float64)}  # another column type
    logged = [("churn", 3, "big-1", *request(rows), None), ("churn", 3, "small", *request(5), None),
              ("churn", 3, "big-2", *request(rows + 1), [f"id-{i}" for i in range(rows + 1)]),
              ("churn", 4, "big-3", *request(rows), None), ("churn", 4, "big-4", inputs, wide, None)]
    logger = make(flush_rows=10**6)
    for model, version, rid, inputs, outputs, ids in logged:
        logger.log(model, version, rid, inputs, outputs, ids)
    assert logger.flush() == 4 * rows + 6
    suffixes = sorted(path.rsplit("-", 1)[-1] if path.endswith(".parquet") else ".jsonl" for path in sink.blobs)
    # version 3's two big requests, then version 4's, then its request with float64 probabilities
    assert suffixes == [".jsonl", "0.parquet", "1.parquet", "2.parquet"]
    by_request = sorted(sink.lines(), key=lambda line: (line["request_id"], line["prediction_id"]))
    sink.blobs.clear()
    monkeypatch.setattr(prediction_log, "SEGMENT_ROWS", 10**9)  # every request as JSON lines
    for model, version, rid, inputs, outputs, ids in logged:
        logger.log(model, version, rid, inputs, outputs, ids)
    logger.flush()
    assert all(path.endswith(".jsonl") for path in sink.blobs)
    assert by_request == sorted(sink.lines(), key=lambda line: (line["request_id"], line["prediction_id"]))


def test_default_ids_read_as_the_list_of_ids_they_stand_for() -> None:
    ids = prediction_log.DefaultIds("req-7", 5, start=10)
    listed = default_prediction_ids("req-7", 5, start=10)
    assert listed == ["req-7-10", "req-7-11", "req-7-12", "req-7-13", "req-7-14"]
    assert list(ids) == listed and ids == listed and listed == ids and len(ids) == 5
    assert (ids[0], ids[-1], ids[1:3], ids[::-2]) == (listed[0], listed[-1], listed[1:3], listed[::-2])
    with pytest.raises(IndexError):
        ids[5]
    with pytest.raises(IndexError):
        ids[-6]
    assert ids != default_prediction_ids("req-7", 5) and ids != "req-7-10"
    assert ids == prediction_log.DefaultIds("req-7", 5, 10) and ids != prediction_log.DefaultIds("req-7", 4, 10)
    assert not prediction_log.DefaultIds("r", 0) and list(prediction_log.DefaultIds("r", 0)) == []


CLASSES = ("fail", "ok")


@st.composite
def _requests(draw: st.DrawFn) -> list[tuple[int, str, dict[str, np.ndarray], dict[str, Any], list[str] | None]]:
    """Requests as the scoring function logs them (array columns), of a few shapes, versions and id kinds."""
    out = []
    for i in range(draw(st.integers(1, 12))):
        rows = draw(st.integers(0, 4))
        names = draw(st.sampled_from([("torque", "type"), ("torque",), ("type", "torque")]))
        values = st.floats(allow_infinity=False, width=32) | st.just(float("nan"))
        inputs = {
            name: (np.array(draw(st.lists(values, min_size=rows, max_size=rows)), dtype=np.float32)
                   if name == "torque" else
                   np.array(draw(st.lists(st.sampled_from(["L", "M", "ü", 'q"%s']), min_size=rows, max_size=rows)),
                            dtype=object)).reshape(-1, 1)
            for name in names
        }
        p = np.array(draw(st.lists(st.floats(0, 1), min_size=rows, max_size=rows)), dtype=np.float64)
        columns: dict[str, Any] = {"predictions": np.where(p > 0.5, "fail", "ok").astype(object),
                                   "model": {"name": "churn"}}
        if draw(st.booleans()):
            columns.update(probabilities=np.stack([p, 1 - p], axis=1).reshape(rows, 2), probability_classes=CLASSES)
        ids = draw(st.none() | st.just([f"c{i}.{r}" for r in range(rows)]))
        out.append((draw(st.sampled_from([3, 4])), f"req-{i}", inputs, columns, ids))
    return out


@settings(max_examples=60, deadline=None)
@given(_requests(), st.integers(1, 64))
def test_requests_stacked_in_one_flush_give_the_lines_each_gives_alone(
    requests: list[tuple[int, str, dict[str, np.ndarray], dict[str, Any], list[str] | None]], stack_rows: int,
) -> None:
    """A flush stacks consecutive requests of one shape into columnar writes of about STACK_ROWS rows; its lines
    are those of the requests written one at a time, in order, and ASCII."""
    default, prediction_log.STACK_ROWS = prediction_log.STACK_ROWS, stack_rows
    try:
        _check_stacked_lines(requests)
    finally:
        prediction_log.STACK_ROWS = default


def _check_stacked_lines(requests: list[tuple[int, str, dict[str, np.ndarray], dict[str, Any], list[str] | None]],
                         ) -> None:
    def flushed(batches: list[list[Any]]) -> list[bytes]:
        sink = MemorySink()
        clock = FakeClock()
        with PredictionLogger(sink, clock=clock, flush_rows=10**6, flush_seconds=3600.0) as logger:
            for batch in batches:
                for version, rid, inputs, columns, ids in batch:
                    clock.now += 0.5
                    logger.log("churn", version, rid, inputs, columns, ids)
                logger.flush()
        return list(sink.blobs.values())  # in the order written

    together = b"".join(flushed([requests]))
    alone = flushed([[request] for request in requests])
    assert together.isascii()
    assert [json.loads(line) for line in together.splitlines()] == [
        json.loads(line) for data in alone for line in data.splitlines()]
    assert len(together.splitlines()) == sum(len(request[3]["predictions"]) for request in requests)
