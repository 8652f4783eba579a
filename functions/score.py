"""POST /api/models/{model}/score: the champion (or a pinned version/alias) scores JSON, CSV, Arrow or Parquet rows.

An async function, so the worker runs it on its event loop instead of handing each request to a thread and back
(~100 µs of a single-row call on two cores); what could wait on storage or take milliseconds (a model not yet in
memory, a big body) still goes to a thread (shared.serving.Scorer.answers_at_once).
"""
from __future__ import annotations

import asyncio
import functools

import azure.functions as func
import orjson

from shared.http import handles_errors_async
from shared.scoring import Encoded
from shared.serving import get_scorer

bp = func.Blueprint()


@bp.function_name("score")
@bp.route(route="models/{model}/score", methods=["POST"])
@handles_errors_async  # only for what happens before scoring (e.g. settings); score() answers every request error
async def score(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions (MLflow-compatible body, or CSV/Arrow per Accept) from the requested model; names and pins
    are checked in shared."""
    scorer = get_scorer()
    model, body = req.route_params.get("model"), req.get_body()
    alias, version = req.params.get("alias"), req.params.get("version")
    run = functools.partial(
        scorer.score, model, body, req.headers.get("content-type"), alias=alias, version=version,
        request_id=req.headers.get("x-request-id"), prediction_ids=req.headers.get("x-prediction-ids"),
        accept=req.headers.get("accept"),
    )
    if scorer.answers_at_once(model, len(body), alias=alias, version=version):
        status, answer, headers = run()
    else:
        status, answer, headers = await asyncio.to_thread(run)
    if isinstance(answer, Encoded):
        return func.HttpResponse(answer.data, status_code=status,
                                 headers={**headers, "content-type": answer.media_type})
    return func.HttpResponse(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                             mimetype="application/json", headers=headers)
