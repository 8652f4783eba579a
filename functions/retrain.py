"""Queue trigger on retrain-requests: retrain a model on its current data and spec."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.pipeline import retrain as retrain_model

bp = func.Blueprint()


@bp.function_name("retrain")
@bp.queue_trigger(arg_name="msg", queue_name=paths.RETRAIN_QUEUE, connection="AzureWebJobsStorage")
def retrain(msg: func.QueueMessage) -> None:
    """Enqueue training for the model's current data (the same path a data drop takes)."""
    result = retrain_model(app_context(), msg.get_body(), msg.dequeue_count or 1)
    logging.info("retrain: message %s -> %s", msg.id, result)
