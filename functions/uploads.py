"""POST /api/registry/models/{model}/uploads (admin key): a write-only SAS URL for one dataset blob.

The admin key, not the function key: a drop can make a new champion on its own (approval: auto), the
same power as retrain and spec uploads, while function keys go to scoring clients and labelling jobs.
"""
from __future__ import annotations

import logging

import azure.functions as func

from shared import names, registry, uploads
from shared.http import handles_errors, json_body, json_response
from shared.lifecycle.stages import app_context

bp = func.Blueprint()


@bp.function_name("create_upload")
@bp.route(route="registry/models/{model}/uploads", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@handles_errors
def create_upload(req: func.HttpRequest) -> func.HttpResponse:
    """Body {"name": "<file>"}: {"url", "expires", "blob"} to PUT datasets/<model>/<file> within minutes."""
    model = names.model_name(req.route_params.get("model"))
    name = uploads.dataset_file_name(json_body(req).get("name"))
    ctx = app_context()
    registry.current_spec(ctx.storage, model)  # 404 now: a drop for a model without a spec is only rejected later
    grant = uploads.grant_upload(ctx.settings, model, name, now=ctx.clock.now())
    logging.info("create_upload: %s until %s", grant.blob, grant.expires.isoformat())
    return json_response(grant.to_json())
