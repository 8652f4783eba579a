"""Blob trigger on scoring-requests/{model}/{name}: score a dropped file into scoring-results, once per version."""
from __future__ import annotations

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk

from shared import paths
from shared.serving import get_scorer
from shared.settings import get_settings
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("batch_score")
@bp.blob_trigger(arg_name="blob", path=f"{paths.SCORING_REQUESTS}/{{model}}/{{name}}", connection="AzureWebJobsStorage",
                 source=func.BlobSource.EVENT_GRID)
def batch_score(blob: blob_sdk.BlobClient) -> None:
    """A file to score arrived: results (or a rejection report) in scoring-results; the rows in the prediction log."""
    from shared.batch_scoring import score_file  # pyarrow loads with the first file, not with the app

    # An SDK-type binding: the host passes the blob's name, not its bytes (a func.InputStream would hold the
    # whole file in memory, and Azure sends it to the worker over gRPC). The file is read in ranges through the
    # storage gateway (bounded memory), pinned to the version the read starts at.
    scorer = get_scorer()  # checks the scoring settings, as the HTTP endpoint does
    outcome = score_file(get_storage(), scorer.cache, blob.blob_name,
                         log_sample_rate=get_settings().prediction_log_sample_rate)
    logging.info("batch_score: %s/%s -> %s", blob.container_name, blob.blob_name,
                 {k: v for k, v in outcome.items() if k != "problems"})
