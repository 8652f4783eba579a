"""Queue trigger on train-requests: fit the candidate once per (data, spec)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.outbox import Messages
from shared.pipeline import deliver

bp = func.Blueprint()


@bp.function_name("train")
@bp.queue_trigger(arg_name="msg", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
@bp.queue_output(arg_name="exports", queue_name=paths.EXPORT_QUEUE, connection="AzureWebJobsStorage")
def train(msg: func.QueueMessage, exports: func.Out[Messages]) -> None:
    """Train the requested candidate once per (data, spec) and hand it to export."""
    ctx, outbox = app_context().with_outbox()
    result = deliver(ctx, paths.TRAIN_QUEUE, msg.get_body(), msg.dequeue_count or 1)
    outbox.bind({paths.EXPORT_QUEUE: exports})
    logging.info("train: message %s -> %s", msg.id, result)
