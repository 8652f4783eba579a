"""Queue triggers on the stage poison queues: fail the run, unless its work completed after all."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.errors import BadRequest
from shared.lifecycle.releases import give_up
from shared.lifecycle.stages import app_context

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
