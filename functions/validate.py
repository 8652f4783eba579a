"""Queue trigger on validate-requests: quality bar, champion/challenger, latency, then promote."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.messages import StageRequest, parse_message
from shared.pipeline import validate_candidate
from shared.stage_errors import recorded_failures
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("validate")
@bp.queue_trigger(arg_name="msg", queue_name=paths.VALIDATE_QUEUE, connection="AzureWebJobsStorage")
def validate(msg: func.QueueMessage) -> None:
    """Decide and apply promote / reject / pending_approval for a candidate."""
    request = parse_message(StageRequest, msg.get_body())
    storage = get_storage()
    with recorded_failures(storage, request.model, request.run_id, "validate", msg.dequeue_count or 1):
        result = validate_candidate(storage, request)
    logging.info("validate: model=%s version=%s -> %s", request.model, request.version, result["outcome"])
