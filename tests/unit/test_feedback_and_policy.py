"""Feedback labels (parsing, idempotent recording) and the retraining policy's triggers and guards."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import feedback, paths
from shared.clock import ManualClock
from shared.errors import BadRequest, InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from shared.memory_storage import MemoryStorage
from shared.monitoring.policy import PastWindow, WindowFacts, decide
from shared.spec import RetrainPolicy

# -- parsing --------------------------------------------------------------------------------------


def test_json_and_csv_bodies_give_the_same_labels() -> None:
    as_json = feedback.parse_feedback(b'{"labels": [{"prediction_id": "r1-0", "label": 1}, '
                                      b'{"prediction_id": "r1-1", "label": "yes"}]}', "application/json")
    as_csv = feedback.parse_feedback(b"prediction_id,label\nr1-0,1\nr1-1,yes\n", "text/csv; charset=utf-8")
    assert as_json == as_csv == [feedback.FeedbackLabel("r1-0", 1), feedback.FeedbackLabel("r1-1", "yes")]


@pytest.mark.parametrize(("body", "content_type", "error", "words"), [
    (b"{", "application/json", BadRequest, "not valid JSON"),
    (b'{"labels": {}}', "application/json", BadRequest, '{"labels": ['),
    (b'{"labels": []}', "application/json", BadRequest, "no labels"),
    (b'{"labels": [{"prediction_id": "a/b", "label": 1}]}', "application/json", InvalidParameter, "prediction_id"),
    (b'{"labels": [{"prediction_id": 7, "label": 1}]}', "application/json", InvalidParameter, "prediction_id"),
    (b'{"labels": [{"prediction_id": "a", "label": null}]}', "application/json", BadRequest, "label must be"),
    (b'{"labels": [{"prediction_id": "a", "label": [1]}]}', "application/json", BadRequest, "label must be"),
    (b"id,label\na,1\n", "text/csv", BadRequest, "prediction_id,label"),
    (b"x", "application/xml", UnsupportedMediaType, "application/xml"),
    (b"x" * (feedback.MAX_BODY_BYTES + 1), "application/json", PayloadTooLarge, "limit"),
])
def test_bad_feedback_is_refused_naming_the_problem(body: bytes, content_type: str, error: type[Exception],
                                                    words: str) -> None:
    with pytest.raises(error) as err:
        feedback.parse_feedback(body, content_type)
    assert words in err.value.message  # type: ignore[attr-defined]


# -- recording ------------------------------------------------------------------------------------


def labels(*pairs: tuple[str, object]) -> list[feedback.FeedbackLabel]:
    return [feedback.FeedbackLabel(pid, value) for pid, value in pairs]  # type: ignore[arg-type]


def test_a_repeated_label_is_recorded_once_and_a_changed_one_replaces_it_keeping_history() -> None:
    storage, clock = MemoryStorage(), ManualClock()
    first = feedback.record(storage, clock, "m", labels(("a", 1), ("b", 0)))
    again = feedback.record(storage, clock, "m", labels(("a", 1), ("b", 0)))
    clock.advance(60)
    changed = feedback.record(storage, clock, "m", labels(("a", 0)))

    assert first.to_json() == {"accepted": 2, "duplicates": 0, "replaced": 0, "unmatched": 2}
    assert again.to_json() == {"accepted": 0, "duplicates": 2, "replaced": 0, "unmatched": 2}
    assert changed.to_json() == {"accepted": 0, "duplicates": 0, "replaced": 1, "unmatched": 1}
    current = feedback.current_labels(storage, "m")
    assert current["a"].label == 0 and current["b"].label == 0
    shard, _ = storage.read_json(paths.MLOPS, paths.feedback_shard("m", feedback.shard_of("a")))
    assert [h["label"] for h in shard["a"]["history"]] == [1, 0]
    # the append-only log holds the two accepted labels and the replacement, not the duplicates
    logged = b"".join(storage.read(paths.FEEDBACK, b.name).data for b in storage.list(paths.FEEDBACK, "m/"))
    assert logged.count(b'"prediction_id"') == 3


def test_one_and_one_point_zero_are_different_labels() -> None:
    storage, clock = MemoryStorage(), ManualClock()
    feedback.record(storage, clock, "m", labels(("a", 1)))
    assert feedback.record(storage, clock, "m", labels(("a", 1.0))).replaced == 1


def test_a_joined_label_stops_counting_as_unmatched() -> None:
    storage, clock = MemoryStorage(), ManualClock()
    feedback.record(storage, clock, "m", labels(("a", 1), ("b", 1)))
    feedback.mark_joined(storage, "m", ["a"], by="report-1")
    assert feedback.record(storage, clock, "m", labels(("a", 1), ("b", 1))).unmatched == 1


# -- policy ---------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def facts(drift: bool | None = True, below: list[str] | None = None, labels_: int = 0,
          new_rows: int = 0) -> WindowFacts:
    return WindowFacts(now=NOW, dataset_drift=drift, below_bar=below or [], labels=labels_,
                       new_labelled_rows=new_rows)


def past(*drifts: bool | None, retrained: list[int] | None = None) -> list[PastWindow]:
    """Hourly windows before NOW, oldest first; `retrained` lists hours-ago of earlier retrainings."""
    windows = [PastWindow(NOW - timedelta(hours=len(drifts) - i), d, None) for i, d in enumerate(drifts)]
    for hours in retrained or []:
        windows.append(PastWindow(NOW - timedelta(hours=hours), False, NOW - timedelta(hours=hours)))
    return sorted(windows, key=lambda w: w.window_end)


@pytest.mark.parametrize(("history", "now_drift", "retrain", "words"), [
    ((True,), True, True, "dataset drift in 2/2"),
    ((False, True), True, True, "dataset drift in 2/3"),
    ((True, False), False, False, "dataset drift in 1/3"),
    ((), True, False, "needs 2"),
    ((False, False), None, False, "dataset drift in 0/3"),
])
def test_drift_in_two_of_the_last_three_windows_triggers(history: tuple[bool, ...], now_drift: bool | None,
                                                          retrain: bool, words: str) -> None:
    decision = decide(RetrainPolicy(), facts(now_drift), past(*history))
    assert decision.retrain is retrain
    assert any(words in r for r in decision.reasons), decision.reasons


def test_a_live_metric_below_the_bar_triggers_only_with_enough_labels() -> None:
    below = ["roc_auc 0.7 < min 0.8"]
    few = decide(RetrainPolicy(), facts(False, below, labels_=50, new_rows=50), [])
    many = decide(RetrainPolicy(), facts(False, below, labels_=300, new_rows=300), [])
    assert not few.retrain and any("only 50 labels" in r for r in few.reasons)
    assert many.retrain and many.trigger == "performance"


@pytest.mark.parametrize(("policy", "history", "new_rows", "labels_", "blocked"), [
    (RetrainPolicy(), past(True, retrained=[3]), 500, 500, "cooldown until"),
    (RetrainPolicy(cooldown_hours=0, max_per_day=2), past(True, retrained=[2, 5]), 500, 500,
     "2 automatic retrainings in the last 24 h"),
    (RetrainPolicy(), past(True), 10, 10, "only 10 new labelled rows"),
    (RetrainPolicy(enabled=False), past(True), 500, 500, "automatic retraining is off"),
])
def test_guards_block_a_triggered_retraining_and_say_why(policy: RetrainPolicy, history: list[PastWindow],
                                                         new_rows: int, labels_: int, blocked: str) -> None:
    decision = decide(policy, facts(True, labels_=labels_, new_rows=new_rows), history)
    assert not decision.retrain and decision.trigger == "drift"
    assert any(blocked in r and r.endswith("not retrained") for r in decision.reasons), decision.reasons


def test_drift_without_any_labels_skips_the_new_rows_guard() -> None:
    decision = decide(RetrainPolicy(), facts(True, labels_=0, new_rows=0), past(True))
    assert decision.retrain and "guards passed: retraining" in decision.reasons


def test_a_window_run_now_holds_every_row_scored_before_the_call() -> None:
    """The window's end is exclusive: "now" rounds up to the next second (rows scored earlier in the same second
    stay in), a given end rounds down (a timer's retry names the same window)."""
    from shared.monitoring import report

    now = datetime(2026, 11, 24, 5, 41, 11, 300_000, tzinfo=UTC)
    scored = now - timedelta(milliseconds=200)
    end = report._window_end(None, now)
    assert scored.timestamp() < end.timestamp() and end == datetime(2026, 11, 24, 5, 41, 12, tzinfo=UTC)
    assert report._window_end(None, now.replace(microsecond=0)) == now.replace(microsecond=0)
    assert report._window_end(now, now) == now.replace(microsecond=0)
