"""Queue trigger on retrain-requests: retrain a model on its current data and spec."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.outbox import Messages
from shared.pipeline import retrain as retrain_model

bp = func.Blueprint()


@bp.function_name("retrain")
@bp.queue_trigger(arg_name="msg", queue_name=paths.RETRAIN_QUEUE, connection="AzureWebJobsStorage")
@bp.queue_output(arg_name="trainings", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
def retrain(msg: func.QueueMessage, trainings: func.Out[Messages]) -> None:
    """Request training on the model's current data (the same path a data drop takes)."""
    ctx, outbox = app_context().with_outbox()
    result = retrain_model(ctx, msg.get_body(), msg.dequeue_count or 1)
    outbox.bind({paths.TRAIN_QUEUE: trainings})
    logging.info("retrain: message %s -> %s", msg.id, result)
