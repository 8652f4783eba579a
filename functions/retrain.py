"""Queue trigger on retrain-requests: retrain a model on its current data and spec."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.messages import RetrainRequest, parse_message
from shared.pipeline import request_retrain

bp = func.Blueprint()


@bp.function_name("retrain")
@bp.queue_trigger(arg_name="msg", queue_name=paths.RETRAIN_QUEUE, connection="AzureWebJobsStorage")
def retrain(msg: func.QueueMessage) -> None:
    """Enqueue training for the model's current data (the same path a data drop takes)."""
    request = parse_message(RetrainRequest, msg.get_body())
    result = request_retrain(app_context(), request)
    logging.info("retrain: model=%s -> %s (%s)", request.model, result, request.reason)
