"""Timer: every 30 s, re-send the work of expired stage leases and finish unsynced alias flips."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.lifecycle.stages import app_context
from shared.lifecycle.sweeper import sweep

bp = func.Blueprint()


@bp.function_name("sweeper")
@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False)
def sweeper(timer: func.TimerRequest) -> None:
    """Finish what crashed workers left behind (see shared/lifecycle/sweeper.py)."""
    report = sweep(app_context())
    if report.resent or report.synced:
        logging.warning("sweeper: %s", report.to_json())
