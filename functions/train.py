"""Queue trigger on train-requests: fit the candidate once per (data, spec)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.messages import TrainRequest, parse_message
from shared.pipeline import train_candidate
from shared.stage_errors import recorded_failures
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("train")
@bp.queue_trigger(arg_name="msg", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
def train(msg: func.QueueMessage) -> None:
    """Train the requested candidate and hand it to export."""
    request = parse_message(TrainRequest, msg.get_body())
    storage = get_storage()
    with recorded_failures(storage, request.model, request.run_id, "train", msg.dequeue_count or 1):
        result = train_candidate(storage, request)
    logging.info("train: model=%s run=%s -> %s", request.model, request.run_id, result["outcome"])
