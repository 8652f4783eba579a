"""Blob trigger on datasets/{model}/{name}: validate, profile and content-address a data drop."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.outbox import Messages
from shared.pipeline import prepare_drop

bp = func.Blueprint()


@bp.function_name("prepare")
@bp.blob_trigger(arg_name="blob", path=f"{paths.DATASETS}/{{model}}/{{name}}", connection="AzureWebJobsStorage",
                 source=func.BlobSource.EVENT_GRID)
@bp.queue_output(arg_name="trainings", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
def prepare(blob: func.InputStream, trainings: func.Out[Messages]) -> None:
    """A dataset arrived: reject it with a report next to it, or prepare it and request training."""
    ctx, outbox = app_context().with_outbox()
    blob_path = (blob.name or "").split("/", 1)[1]
    # Read again for the ETag the run id keys on: the host passes blob properties serialised by
    # Newtonsoft, where an Azure.ETag comes out as {} (so blob.blob_properties has no usable ETag).
    current = ctx.storage.read(paths.DATASETS, blob_path)
    result = prepare_drop(ctx, blob_path, current.data, current.etag)
    outbox.bind({paths.TRAIN_QUEUE: trainings})
    logging.info("prepare: %s -> %s (run %s)", blob.name, result["outcome"], result["run_id"])
