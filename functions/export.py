"""Queue trigger on export-requests: ONNX conversion with a parity gate."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import paths
from shared.messages import StageRequest, parse_message
from shared.pipeline import export_candidate
from shared.settings import get_settings
from shared.stage_errors import recorded_failures
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("export")
@bp.queue_trigger(arg_name="msg", queue_name=paths.EXPORT_QUEUE, connection="AzureWebJobsStorage")
def export(msg: func.QueueMessage) -> None:
    """Export the candidate to ONNX and check parity on its holdout."""
    request = parse_message(StageRequest, msg.get_body())
    storage = get_storage()
    with recorded_failures(storage, request.model, request.run_id, "export", msg.dequeue_count or 1):
        result = export_candidate(storage, get_settings(), request)
    logging.info("export: model=%s version=%s -> %s", request.model, request.version, result["outcome"])
