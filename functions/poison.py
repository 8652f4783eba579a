"""Queue triggers on the poison queues: a stage's fails its run (unless its work completed after all), a
monitoring window's leaves a failed report with the last attempt's reason."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.errors import BadRequest, NotFound, Unavailable
from shared.lifecycle.releases import give_up
from shared.lifecycle.stages import app_context
from shared.messages import MonitorRequest, parse_message
from shared.monitoring.report import give_up_window

bp = func.Blueprint()


def _handle(queue: str, msg: func.QueueMessage) -> None:
    try:
        outcome = give_up(app_context(), queue, msg.get_body())
    except BadRequest as exc:  # kept in the poison queue as it is: nothing to attribute it to
        logging.error("poison: unreadable message %s in %s left as is: %s", msg.id, paths.poison(queue), exc.message)
        return
    logging.error("poison: %s message %s: %s", queue, msg.id, outcome)


@bp.function_name("train_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.TRAIN_QUEUE), connection="AzureWebJobsStorage")
def train_poison(msg: func.QueueMessage) -> None:
    """A training request failed too often."""
    _handle(paths.TRAIN_QUEUE, msg)


@bp.function_name("export_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.EXPORT_QUEUE), connection="AzureWebJobsStorage")
def export_poison(msg: func.QueueMessage) -> None:
    """An export request failed too often."""
    _handle(paths.EXPORT_QUEUE, msg)


@bp.function_name("retrain_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.RETRAIN_QUEUE), connection="AzureWebJobsStorage")
def retrain_poison(msg: func.QueueMessage) -> None:
    """A retrain request failed too often."""
    _handle(paths.RETRAIN_QUEUE, msg)


@bp.function_name("validate_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.VALIDATE_QUEUE), connection="AzureWebJobsStorage")
def validate_poison(msg: func.QueueMessage) -> None:
    """A validation request failed too often."""
    _handle(paths.VALIDATE_QUEUE, msg)


@bp.function_name("monitor_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.MONITOR_QUEUE), connection="AzureWebJobsStorage")
def monitor_poison(msg: func.QueueMessage) -> None:
    """A monitoring window failed too often: its report says so (pages, CLI and the retraining policy see it)."""
    try:
        request = parse_message(MonitorRequest, msg.get_body())
    except BadRequest as exc:
        logging.error("poison: unreadable message %s in %s left as is: %s", msg.id, paths.poison(paths.MONITOR_QUEUE),
                      exc.message)
        return
    try:
        report = give_up_window(app_context(), request.model, request.window_end, request.trigger)
    except (NotFound, Unavailable) as exc:  # the model or its champion went away: nothing to report on
        logging.warning("poison: monitor window of %s: %s", request.model, exc.message)
        return
    logging.error("poison: %s message %s: window %s of %s: %s", paths.MONITOR_QUEUE, msg.id,
                  report["window"]["end"], request.model, report.get("reason") or report.get("status"))
