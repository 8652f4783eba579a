"""POST /api/models/{model}/score: the champion (or a pinned version/alias) scores JSON, CSV, Arrow or Parquet rows."""
from __future__ import annotations

import azure.functions as func
import orjson

from shared.http import handles_errors
from shared.scoring import Encoded
from shared.serving import get_scorer

bp = func.Blueprint()


@bp.function_name("score")
@bp.route(route="models/{model}/score", methods=["POST"])
@handles_errors  # only for what happens before scoring (e.g. settings); score() answers every request error
def score(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions (MLflow-compatible body, or CSV/Arrow per Accept) from the requested model; names and pins
    are checked in shared."""
    status, body, headers = get_scorer().score(
        req.route_params.get("model"), req.get_body(), req.headers.get("content-type"),
        alias=req.params.get("alias"), version=req.params.get("version"),
        request_id=req.headers.get("x-request-id"), prediction_ids=req.headers.get("x-prediction-ids"),
        accept=req.headers.get("accept"),
    )
    if isinstance(body, Encoded):
        return func.HttpResponse(body.data, status_code=status, headers={**headers, "content-type": body.media_type})
    return func.HttpResponse(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                             mimetype="application/json", headers=headers)
