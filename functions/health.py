"""GET /api/health (anonymous): is storage reachable, which version runs."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.errors import StorageUnreachable
from shared.settings import get_settings
from shared.storage import get_storage

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Report storage reachability and the app version; 503 when storage is down."""
    body = {"version": get_settings().app_version, "storage": "ok"}
    status = 200
    try:
        get_storage().ping()
    except StorageUnreachable as exc:
        logging.warning("health: %s", exc.message)
        body.update(storage="unreachable", error=exc.message)
        status = 503
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")
