"""A run's stages as people read them (received -> prepared -> trained -> exported -> validated), with the
elapsed time of each from the run's timeline, and the decision at the end. Pure: tests/unit/test_cli_render.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlops_cli.errors import FAILED, OK
from mlops_cli.render import Style, duration, parse_time, reason_mark

DROP_STAGES = ("received", "prepared", "trained", "exported", "validated")
RETRAIN_STAGES = ("received", "queued", "trained", "exported", "validated")
# Where a run stops on its own, and what came later to runs that were promoted once.
SETTLED = frozenset({"promoted", "pending_approval", "rejected", "failed", "duplicate", "waiting_for_data",
                     "superseded", "rolled_back"})
UNSUCCESSFUL = frozenset({"rejected", "failed"})
EXIT_CODES = {"rejected": FAILED, "failed": FAILED, "waiting_for_data": FAILED}
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_MARKS = {"done": ("✓", "green"), "failed": ("✗", "red"), "skipped": ("-", "dim"), "waiting": ("·", "dim")}


@dataclass(frozen=True)
class Step:
    """One stage of a run: done, active, failed, skipped (the run ended before it) or waiting."""

    name: str
    state: str
    seconds: float | None = None


def events(run: dict[str, Any]) -> list[tuple[str, datetime]]:
    """(status, at) of the run's timeline, in order."""
    found = []
    for event in run.get("timeline") or []:
        at = parse_time(event.get("at"))
        if at is not None:
            found.append((str(event.get("status")), at))
    return found


def final_status(run: dict[str, Any]) -> str | None:
    """The status the run settled in first (later moves, e.g. superseded, are other people's doing)."""
    return next((status for status, _ in events(run) if status in SETTLED), None)


def stages_of(run: dict[str, Any]) -> tuple[str, ...]:
    """A drop's stages, or a retrain's (queued instead of prepared: its data was prepared before)."""
    statuses = {status for status, _ in events(run)}
    return RETRAIN_STAGES if "queued" in statuses or not run.get("source_etag") else DROP_STAGES


def _reached(run: dict[str, Any], stages: tuple[str, ...]) -> dict[str, datetime]:
    reached: dict[str, datetime] = {}
    for status, at in events(run):
        if status in stages and status not in reached:
            reached[status] = at
        elif status in SETTLED - UNSUCCESSFUL - {"duplicate", "waiting_for_data"}:
            reached.setdefault("validated", at)  # the gate decided: promoted or pending approval
    return reached


def steps(run: dict[str, Any], *, active_seconds: float | None = None) -> list[Step]:
    """The run's stages with the seconds each took (from the previous stage's time to its own)."""
    stages = stages_of(run)
    reached = _reached(run, stages)
    final = final_status(run)
    final_at = next((at for status, at in events(run) if status == final), None)
    out: list[Step] = []
    previous: datetime | None = None
    for stage in stages:
        at = reached.get(stage)
        if at is not None:
            out.append(Step(stage, "done", (at - previous).total_seconds() if previous else None))
            previous = at
        elif final is None:
            state = "waiting" if any(s.state == "active" for s in out) else "active"
            out.append(Step(stage, state, active_seconds if state == "active" else None))
        elif final in UNSUCCESSFUL and not any(s.state == "failed" for s in out):
            out.append(Step(stage, "failed", (final_at - previous).total_seconds() if final_at and previous else None))
        else:
            out.append(Step(stage, "skipped"))
    return out


def step_lines(found: list[Step], style: Style, *, frame: int = 0) -> list[str]:
    """'  ✓ prepared   0.4 s' per stage; the active one gets a spinner frame."""
    width = max((len(s.name) for s in found), default=0)
    lines = []
    for step in found:
        mark, colour = (SPINNER[frame % len(SPINNER)], "cyan") if step.state == "active" else _MARKS[step.state]
        name = step.name.ljust(width)
        text = f"  {style.paint(mark, colour)} {style.paint(name, 'dim') if step.state != 'done' else name}"
        lines.append(f"{text}  {duration(step.seconds)}".rstrip())
    return lines


def outcome_lines(run: dict[str, Any], version: dict[str, Any] | None, style: Style) -> list[str]:
    """The decision and its reasons, or why the run ended without one, and what to do next."""
    final = final_status(run) or str(run.get("status"))
    model, number = run.get("model"), run.get("version")
    made = version is not None and version.get("run_id") == run.get("run_id")  # not a duplicate's older version
    reasons = [str(r) for r in ((version or {}).get("decision") or {}).get("reasons") or []] if made else []
    head = {
        "promoted": f"{style.paint('✓ promoted', 'green', 'bold')}: {model} v{number} is the champion",
        "pending_approval": f"{style.paint('! pending approval', 'yellow', 'bold')}: {model} v{number} waits for "
                            "a reviewer",
        "rejected": f"{style.paint('✗ rejected', 'red', 'bold')}" + (f": {model} v{number}" if number else ""),
        "failed": f"{style.paint('✗ failed', 'red', 'bold')}: {run.get('error') or 'see the run'}",
    }.get(final, f"{style.status(final)}: {_last_detail(run)}")
    lines = [head, *(f"  {reason_mark(r, style)}" for r in reasons)]
    if final == "rejected" and not reasons:
        lines += [f"  {reason_mark('rejected: ' + p.strip(), style)}" for p in _problems(run)]
        if run.get("rejection_report"):
            lines.append(f"  report: {run['rejection_report']}")
    if final == "pending_approval":
        lines.append(f"  next: mlops approve {model} {number}   or   mlops reject {model} {number} --reason ...")
    return lines


def _problems(run: dict[str, Any]) -> list[str]:
    error = str(run.get("error") or "")
    return [p for p in error.removeprefix("data rejected:").split("; ") if p.strip()] or [error]


def _last_detail(run: dict[str, Any]) -> str:
    details = [e.get("detail") for e in run.get("timeline") or [] if e.get("detail")]
    return str(details[-1]) if details else str(run.get("status"))


def exit_code(run: dict[str, Any]) -> int:
    """0 for promoted, pending approval, duplicate; 1 for rejected, failed, waiting for data."""
    return EXIT_CODES.get(final_status(run) or "", OK)
