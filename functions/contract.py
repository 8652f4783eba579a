"""The scoring contract over HTTP: a version's signature and the OpenAPI document of every champion (function key)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import names, openapi, registry
from shared.contract import signature_of
from shared.http import handles_errors, json_response
from shared.storage import get_storage

bp = func.Blueprint()
log = logging.getLogger("mlops.contract")


@bp.function_name("get_signature")
@bp.route(route="models/{model}/signature", methods=["GET"])
@handles_errors
def get_signature(req: func.HttpRequest) -> func.HttpResponse:
    """The signature of the champion, or of ?version=N: what its scoring endpoint accepts and answers."""
    storage = get_storage()
    model = names.model_name(req.route_params.get("model"))
    raw = req.params.get("version")
    version = names.version(raw) if raw is not None else registry.resolve_alias(storage, model)[0]
    record = registry.get_version(storage, model, version)
    signature = signature_of(storage, record)
    return json_response({"model": model, "version": version, "stored": record.signature is not None,
                          "signature": signature.to_json()})


@bp.function_name("get_openapi")
@bp.route(route="openapi.json", methods=["GET"])
@handles_errors
def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
    """OpenAPI 3.1 of the score and feedback routes, one path per model with a champion."""
    document = openapi.build(get_storage())
    log.info("openapi: %d paths", len(document["paths"]))
    return json_response(document)
