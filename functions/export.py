"""Queue trigger on export-requests: ONNX conversion with a parity gate."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.pipeline import deliver

bp = func.Blueprint()


@bp.function_name("export")
@bp.queue_trigger(arg_name="msg", queue_name=paths.EXPORT_QUEUE, connection="AzureWebJobsStorage")
def export(msg: func.QueueMessage) -> None:
    """Export the candidate to ONNX and check parity on its holdout."""
    result = deliver(app_context(), paths.EXPORT_QUEUE, msg.get_body(), msg.dequeue_count or 1)
    logging.info("export: message %s -> %s", msg.id, result)
