"""Blob trigger on datasets/{model}/{name}: validate, profile and content-address a data drop."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.lifecycle.stages import app_context
from shared.pipeline import prepare_drop

bp = func.Blueprint()


@bp.function_name("prepare")
@bp.blob_trigger(arg_name="blob", path=f"{paths.DATASETS}/{{model}}/{{name}}", connection="AzureWebJobsStorage",
                 source=func.BlobSource.EVENT_GRID)
def prepare(blob: func.InputStream) -> None:
    """A dataset arrived: reject it with a report next to it, or prepare it and request training."""
    ctx = app_context()
    blob_path = (blob.name or "").split("/", 1)[1]
    # Read the version that fired, with its ETag (the receipt and the run id key on it).
    current = ctx.storage.read(paths.DATASETS, blob_path)
    result = prepare_drop(ctx, blob_path, current.data, current.etag)
    logging.info("prepare: %s -> %s (run %s)", blob.name, result["outcome"], result["run_id"])
