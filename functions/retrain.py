"""Queue trigger on retrain-requests: retrain a model on its current data and spec."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.messages import RetrainRequest, parse_message
from shared.pipeline import request_retrain
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("retrain")
@bp.queue_trigger(arg_name="msg", queue_name=paths.RETRAIN_QUEUE, connection="AzureWebJobsStorage")
def retrain(msg: func.QueueMessage) -> None:
    """Enqueue training for the model's current data (the same path a data drop takes)."""
    request = parse_message(RetrainRequest, msg.get_body())
    train_request = request_retrain(get_storage(), request)
    logging.info("retrain: model=%s run=%s (%s)", request.model, train_request.run_id, request.reason)
