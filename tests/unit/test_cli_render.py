"""The CLI's pure formatting: tables, colours, relative times, durations, sizes, the progress bar, a run's stages
and its decision."""
from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlops_cli.progress import exit_code, final_status, outcome_lines, stages_of, step_lines, steps
from mlops_cli.render import Style, ago, duration, progress_bar, size, table, visible_len

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COLOUR = Style(enabled=True)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_table_aligns_columns_by_visible_width_even_with_colours() -> None:
    rows = [["v2", COLOUR.status("promoted"), "rmse 53.1"], ["v10", COLOUR.status("rejected"), "-"]]
    lines = table(["VERSION", "STATUS", "METRICS"], rows)
    plain = [line.replace("\x1b[32;1m", "").replace("\x1b[31m", "").replace("\x1b[0m", "") for line in lines]
    assert plain == ["VERSION  STATUS    METRICS",
                     "v2       promoted  rmse 53.1",
                     "v10      rejected  -"]
    assert visible_len(lines[1]) == len(plain[1])


def test_colours_only_on_a_terminal_and_never_with_no_color() -> None:
    assert Style.for_stream(Terminal(), {}).enabled
    assert not Style.for_stream(io.StringIO(), {}).enabled
    assert not Style.for_stream(Terminal(), {"NO_COLOR": "1"}).enabled
    assert not Style.for_stream(Terminal(), {}, no_color=True).enabled
    assert Style().paint("x", "red") == "x" and COLOUR.paint("x", "red") == "\x1b[31mx\x1b[0m"


@pytest.mark.parametrize(("seconds", "text"), [
    (3, "just now"), (42, "42 s ago"), (3 * 60 + 5, "3 min ago"), (5 * 3600, "5 h ago"), (86400, "1 day ago"),
    (2 * 86400 + 5, "2 days ago"), (-15 * 60, "in 15 min"), (40 * 86400, "2026-10-15"),
])
def test_relative_times_read_like_speech(seconds: float, text: str) -> None:
    assert ago(NOW - timedelta(seconds=seconds), NOW) == text


def test_an_unknown_time_is_a_dash() -> None:
    assert ago(None, NOW) == "-"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.042, "0.04 s"), (12.34, "12.3 s"), (192, "3 min 12 s"), (7500, "2 h 05 min"), (None, ""), (-1, "0.00 s"),
])
def test_durations(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("count", "text"), [
    (512, "512 B"), (1536, "1.5 KiB"), (200_000_000, "190.7 MiB"), (3.5 * 1024**3, "3.50 GiB"),
])
def test_sizes_in_binary_units(count: float, text: str) -> None:
    assert size(count) == text


def test_the_progress_bar_fills_by_eighths_and_estimates_the_time_left() -> None:
    half = progress_bar(100 * 1024**2, 200 * 1024**2, 2.0, width=10)
    assert half.startswith("[█████     ]   50%  100.0 MiB/200.0 MiB  50.0 MiB/s  2.0 s left")
    assert progress_bar(1, 16, 1.0, width=2).startswith("[▏ ]")
    done = progress_bar(10, 10, 1.0, width=4)
    assert done.startswith("[████]  100%") and "left" not in done
    assert progress_bar(0, 0, 0.0, width=4).startswith("[████]  100%")  # an empty file is done at once


def at(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def run_record(*timeline: tuple[str, float], **fields: Any) -> dict[str, Any]:
    return {"run_id": "r1", "model": "churn", "status": timeline[-1][0], "source_etag": '"0x1"',
            "timeline": [{"status": s, "at": at(t)} for s, t in timeline], **fields}


def test_a_promoted_drop_has_every_stage_done_with_its_seconds() -> None:
    run = run_record(("received", 0), ("prepared", 0.4), ("trained", 2.4), ("exported", 3.0), ("promoted", 3.5),
                     version=3)
    found = steps(run)
    assert [(s.name, s.state) for s in found] == [("received", "done"), ("prepared", "done"), ("trained", "done"),
                                                  ("exported", "done"), ("validated", "done")]
    assert [s.seconds for s in found] == [None, pytest.approx(0.4), pytest.approx(2.0), pytest.approx(0.6),
                                          pytest.approx(0.5)]
    assert step_lines(found, Style()) == ["  ✓ received", "  ✓ prepared   0.40 s", "  ✓ trained    2.0 s",
                                          "  ✓ exported   0.60 s", "  ✓ validated  0.50 s"]
    assert final_status(run) == "promoted" and exit_code(run) == 0


def test_a_drop_rejected_by_its_data_fails_at_prepared_and_skips_the_rest() -> None:
    run = run_record(("received", 0), ("rejected", 0.2), error="data rejected: 40 rows, at least 200 needed; "
                     "column bmi: 3 nulls",
                     rejection_report="datasets-rejected/churn/few.csv.rejection.json")
    assert [(s.name, s.state) for s in steps(run)] == [("received", "done"), ("prepared", "failed"),
                                                       ("trained", "skipped"), ("exported", "skipped"),
                                                       ("validated", "skipped")]
    lines = outcome_lines(run, None, Style())
    assert lines == ["✗ rejected", "  ✗ rejected: 40 rows, at least 200 needed", "  ✗ rejected: column bmi: 3 nulls",
                     "  report: datasets-rejected/churn/few.csv.rejection.json"]
    assert exit_code(run) == 1


def test_a_run_in_progress_has_one_active_stage_with_a_spinner_and_its_local_elapsed_time() -> None:
    run = run_record(("received", 0), ("prepared", 0.3))
    found = steps(run, active_seconds=1.25)
    assert [(s.name, s.state) for s in found][2:] == [("trained", "active"), ("exported", "waiting"),
                                                      ("validated", "waiting")]
    assert step_lines(found, Style(), frame=1)[2] == "  ⠙ trained    1.2 s"
    assert final_status(run) is None


def test_a_retrain_shows_queued_instead_of_prepared() -> None:
    run = run_record(("received", 0), ("queued", 0.1), ("trained", 1.1), source_etag=None)
    assert stages_of(run)[1] == "queued"
    assert [s.state for s in steps(run)] == ["done", "done", "done", "active", "waiting"]


def test_the_gate_rejecting_fails_validated_and_lists_its_reasons() -> None:
    run = run_record(("received", 0), ("prepared", 1), ("trained", 2), ("exported", 3), ("rejected", 4), version=2)
    version = {"run_id": "r1", "decision": {"reasons": ["passed: parity", "rejected: rmse 70 > bar 60"]}}
    assert steps(run)[-1].state == "failed"
    assert outcome_lines(run, version, Style()) == ["✗ rejected: churn v2", "  ✓ passed: parity",
                                                    "  ✗ rejected: rmse 70 > bar 60"]


def test_pending_approval_says_what_to_run_next() -> None:
    run = run_record(("received", 0), ("prepared", 1), ("trained", 2), ("exported", 3), ("pending_approval", 4),
                     version=4)
    lines = outcome_lines(run, {"run_id": "r1", "decision": {"reasons": ["pending: approval=manual"]}}, Style())
    assert lines[0] == "! pending approval: churn v4 waits for a reviewer"
    assert lines[-1] == "  next: mlops approve churn 4   or   mlops reject churn 4 --reason ..."
    assert exit_code(run) == 0


def test_a_duplicate_does_not_borrow_the_reasons_of_the_version_it_duplicates() -> None:
    run = {**run_record(("received", 0), ("queued", 0.1)), "source_etag": None, "version": 1,
           "timeline": [{"status": "received", "at": at(0)}, {"status": "queued", "at": at(0.1)},
                        {"status": "duplicate", "at": at(0.3), "detail": "same data and spec as version 1"}]}
    lines = outcome_lines(run, {"run_id": "another", "decision": {"reasons": ["passed: x"]}}, Style())
    assert lines == ["duplicate: same data and spec as version 1"]
    assert exit_code(run) == 0


def test_a_later_superseded_does_not_hide_that_the_run_was_promoted() -> None:
    run = run_record(("received", 0), ("prepared", 1), ("trained", 2), ("exported", 3), ("promoted", 4),
                     ("superseded", 99))
    assert final_status(run) == "promoted" and steps(run)[-1].seconds == 1.0


def test_the_versions_table_shows_the_reason_that_decided() -> None:
    from mlops_cli.commands.reads import decisive, key_metrics

    assert decisive(["passed: parity", "rejected: rmse 70 > bar 60", "passed: latency"]) == "rejected: rmse 70 > bar 60"
    assert decisive(["passed: parity", "passed: rmse 53 vs champion 54", "replay: 2 rows"]) == \
        "passed: rmse 53 vs champion 54"
    assert decisive(["passed: parity"]) == "passed: parity" and decisive([]) == "-"
    version = {"metrics": {"sklearn_holdout": {"rmse": 1.0}, "onnx_holdout": {"r2": 0.5, "rmse": 53.77751, "mae": 4}}}
    assert key_metrics(version) == "rmse 53.7775  mae 4"
    assert key_metrics({}) == "-"
