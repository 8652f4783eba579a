"""Queue trigger on export-requests: ONNX conversion with a parity gate."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.outbox import Messages
from shared.pipeline import deliver

bp = func.Blueprint()


@bp.function_name("export")
@bp.queue_trigger(arg_name="msg", queue_name=paths.EXPORT_QUEUE, connection="AzureWebJobsStorage")
@bp.queue_output(arg_name="validations", queue_name=paths.VALIDATE_QUEUE, connection="AzureWebJobsStorage")
def export(msg: func.QueueMessage, validations: func.Out[Messages]) -> None:
    """Export the candidate to ONNX and check parity on its holdout."""
    ctx, outbox = app_context().with_outbox()
    result = deliver(ctx, paths.EXPORT_QUEUE, msg.get_body(), msg.dequeue_count or 1)
    outbox.bind({paths.VALIDATE_QUEUE: validations})
    logging.info("export: message %s -> %s", msg.id, result)
