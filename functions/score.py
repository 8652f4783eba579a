"""POST /api/models/{model}/score: the champion (or a pinned version/alias) scores JSON or CSV rows."""
from __future__ import annotations

import azure.functions as func
import orjson

from shared.errors import BadRequest
from shared.serving import get_scorer

bp = func.Blueprint()


def _pin(req: func.HttpRequest) -> tuple[str | None, int | None]:
    alias, version = req.params.get("alias"), req.params.get("version")
    if alias and version:
        raise BadRequest("pass either ?alias= or ?version=, not both")
    if version is not None:
        if not version.isdigit():
            raise BadRequest(f"?version= must be a positive integer, got {version!r}")
        return None, int(version)
    return alias, None


@bp.function_name("score")
@bp.route(route="models/{model}/score", methods=["POST"])
def score(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions (MLflow-compatible body) from the requested model."""
    try:
        alias, version = _pin(req)
    except BadRequest as exc:
        return func.HttpResponse(orjson.dumps({"error_code": exc.code, "message": exc.message}),
                                 status_code=exc.status, mimetype="application/json")
    status, body, headers = get_scorer().score(
        req.route_params["model"], req.get_body(), req.headers.get("content-type"),
        alias=alias, version=version, request_id=req.headers.get("x-request-id"),
    )
    return func.HttpResponse(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                             mimetype="application/json", headers=headers)
