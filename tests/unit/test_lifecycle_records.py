"""The lifecycle state machine as pure functions: allowed moves, replays, refusals, alias history."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.errors import IllegalTransition
from shared.lifecycle.records import (
    VERSION_MOVES,
    AliasAction,
    Aliases,
    ModelVersion,
    RunRecord,
    RunStatus,
    VersionStatus,
    advance_run,
    advance_version,
    champion_stack,
    desired_statuses,
    migrate_aliases,
    migrate_run,
    migrate_version,
    with_change,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
V = VersionStatus


def version(status: VersionStatus) -> ModelVersion:
    return ModelVersion(model="m", version=3, status=status, created=AT)


@pytest.mark.parametrize("start,to", [(s, t) for s, targets in VERSION_MOVES.items() for t in targets])
def test_every_allowed_version_move_records_its_history(start, to):
    moved = advance_version(version(start), to, at=AT, by="tester", reason="because")
    assert moved.status == to and moved.history[-1].status == to and moved.history[-1].from_status == start
    assert moved.history[-1].by == "tester" and moved.history[-1].reason == "because"


@pytest.mark.parametrize("start,to", [(s, t) for s in V for t in V if t != s and t not in VERSION_MOVES[s]])
def test_every_other_version_move_is_refused_with_a_409(start, to):
    with pytest.raises(IllegalTransition) as err:
        advance_version(version(start), to, at=AT)
    assert err.value.status == 409 and f"is {start}" in err.value.message and f"cannot become {to}" in err.value.message


def test_a_replayed_version_move_returns_the_record_unchanged():
    record = version(V.PROMOTED)
    assert advance_version(record, V.PROMOTED, at=AT) is record


def test_rejected_and_failed_versions_are_final():
    assert VERSION_MOVES[V.REJECTED] == frozenset() and VERSION_MOVES[V.FAILED] == frozenset()


def test_a_run_moves_forward_and_replays_of_earlier_steps_change_nothing():
    run = RunRecord(run_id="r", model="m", created=AT, status=RunStatus.TRAINED)
    assert advance_run(run, RunStatus.RECEIVED, at=AT) is run
    assert advance_run(run, RunStatus.EXPORTED, at=AT).status == RunStatus.EXPORTED


def test_a_promoted_run_cannot_fail_and_an_error_does_not_stick_to_success():
    run = RunRecord(run_id="r", model="m", created=AT, status=RunStatus.EXPORTED, error="export attempt 1: boom")
    promoted = advance_run(run, RunStatus.PROMOTED, at=AT)
    assert promoted.error is None
    with pytest.raises(IllegalTransition):
        advance_run(promoted, RunStatus.FAILED, at=AT)
    assert advance_run(promoted, RunStatus.SUPERSEDED, at=AT).status == RunStatus.SUPERSEDED


def flips(*steps: tuple[AliasAction, int]) -> Aliases:
    aliases = Aliases()
    for action, to in steps:
        aliases = with_change(aliases, action, to, at=AT, by="t", reason="r")
    return aliases


def test_previous_is_the_champion_before_and_rollback_goes_further_back_instead_of_toggling():
    P, R = AliasAction.PROMOTE, AliasAction.ROLLBACK
    aliases = flips((P, 1), (P, 2), (P, 3))
    assert (aliases.champion, aliases.previous) == (3, 2)
    aliases = with_change(aliases, R, 2, at=AT, by="t", reason="r")
    assert (aliases.champion, aliases.previous) == (2, 1)
    aliases = with_change(aliases, R, 1, at=AT, by="t", reason="r")
    assert (aliases.champion, aliases.previous) == (1, None)
    assert [c.seq for c in aliases.history] == [1, 2, 3, 4, 5]


def test_rolling_forward_to_a_dropped_version_pushes_it_again():
    P, R = AliasAction.PROMOTE, AliasAction.ROLLBACK
    aliases = flips((P, 1), (P, 2), (R, 1), (R, 2))
    assert (aliases.champion, aliases.previous) == (2, 1)
    assert champion_stack(aliases.history) == [1, 2]


def test_a_flip_to_the_champion_itself_is_refused():
    with pytest.raises(IllegalTransition, match="already the champion"):
        with_change(flips((AliasAction.PROMOTE, 4)), AliasAction.APPROVE, 4, at=AT, by="t", reason="r")


def test_desired_statuses_follow_the_history():
    P, R = AliasAction.PROMOTE, AliasAction.ROLLBACK
    aliases = flips((P, 1), (P, 2), (P, 3), (R, 2))
    assert desired_statuses(aliases) == {1: V.SUPERSEDED, 2: V.PROMOTED, 3: V.ROLLED_BACK}


def test_records_written_by_the_previous_release_are_read_and_migrated():
    old_aliases = {"champion": 5, "previous": 3, "updated": "2025-12-01T00:00:00+00:00"}
    aliases = migrate_aliases(old_aliases)
    assert (aliases.champion, aliases.previous) == (5, 3) and len(aliases.history) == 2
    old_run = {"run_id": "r", "model": "m", "created": "2025-12-01T00:00:00+00:00", "status": "retrying",
               "timeline": [{"status": "received", "at": "2025-12-01T00:00:00+00:00"},
                            {"status": "trained", "at": "2025-12-01T00:00:01+00:00"},
                            {"status": "retrying", "at": "2025-12-01T00:00:02+00:00", "error": "x"}],
               "fit_seconds": 1.5}
    run = migrate_run(old_run)
    assert run.status == RunStatus.TRAINED and run.to_json()["fit_seconds"] == 1.5
    old_version = {"model": "m", "version": 2, "status": "exported", "created": "2025-12-01T00:00:00+00:00",
                   "artifacts": {"onnx": {"path": "p", "sha256": "s"}}, "approved_by": "x", "fit_seconds": 2}
    record = migrate_version(old_version)
    assert record.status == V.EXPORTED and record.artifacts["onnx"].path == "p"
    assert record.to_json()["approved_by"] == "x"
