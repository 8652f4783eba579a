"""Queue triggers on the stage poison queues: mark the run failed with the last recorded error."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared import paths
from shared.pipeline import fail_run_from_poison
from shared.storage import get_storage

bp = func.Blueprint()


def _handle(queue: str, msg: func.QueueMessage) -> None:
    try:
        payload = json.loads(msg.get_body())
    except ValueError:
        logging.error("poison: undecodable message in %s kept as is: %r", paths.poison(queue), msg.get_body()[:200])
        return
    reason = fail_run_from_poison(get_storage(), queue, payload, msg.dequeue_count or 0)
    logging.error("poison: %s run=%s failed: %s", queue, payload.get("run_id"), reason)


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


@bp.function_name("validate_poison")
@bp.queue_trigger(arg_name="msg", queue_name=paths.poison(paths.VALIDATE_QUEUE), connection="AzureWebJobsStorage")
def validate_poison(msg: func.QueueMessage) -> None:
    """A validation request failed too often."""
    _handle(paths.VALIDATE_QUEUE, msg)
