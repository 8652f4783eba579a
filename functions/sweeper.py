"""Timer: every 10 s, re-send the work of dead or stranded claims and finish half-done flips."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.lifecycle.stages import app_context
from shared.lifecycle.sweeper import sweep

bp = func.Blueprint()


@bp.function_name("sweeper")
@bp.timer_trigger(arg_name="timer", schedule="*/10 * * * * *", run_on_startup=False)
def sweeper(timer: func.TimerRequest) -> None:
    """Finish what crashed workers left behind (see shared/lifecycle/sweeper.py)."""
    report = sweep(app_context())
    if report.resent or report.synced or report.followed:
        logging.warning("sweeper: %s", report.to_json())
