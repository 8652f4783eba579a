"""Queue trigger on validate-requests: quality bar, champion/challenger, latency, then promote."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.pipeline import deliver

bp = func.Blueprint()


@bp.function_name("validate")
@bp.queue_trigger(arg_name="msg", queue_name=paths.VALIDATE_QUEUE, connection="AzureWebJobsStorage")
def validate(msg: func.QueueMessage) -> None:
    """Decide and apply promote / reject / pending_approval for a candidate."""
    result = deliver(app_context(), paths.VALIDATE_QUEUE, msg.get_body(), msg.dequeue_count or 1)
    logging.info("validate: message %s -> %s", msg.id, result)
