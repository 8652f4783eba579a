"""Admin HTTP API over the registry and run history (reads: function key; changes: admin key)."""
from __future__ import annotations

import azure.functions as func

from shared import names, paths, registry, runs
from shared.errors import BadRequest, NotFound
from shared.http import handles_errors, json_body, json_response
from shared.lifecycle import releases
from shared.lifecycle.records import RunStatus
from shared.lifecycle.stages import app_context
from shared.messages import RetrainRequest
from shared.outbox import message_text
from shared.spec import parse_spec
from shared.storage import get_storage

bp = func.Blueprint()
ADMIN = func.AuthLevel.ADMIN


def _model(req: func.HttpRequest) -> str:
    return names.model_name(req.route_params.get("model"))


def _version(req: func.HttpRequest) -> int:
    return names.version(req.route_params.get("version"))


@bp.function_name("list_models")
@bp.route(route="registry/models", methods=["GET"])
@handles_errors
def list_models(req: func.HttpRequest) -> func.HttpResponse:
    """Every model with its aliases."""
    return json_response({"models": [m.to_json() for m in registry.list_models(get_storage())]})


@bp.function_name("list_versions")
@bp.route(route="registry/models/{model}/versions", methods=["GET"])
@handles_errors
def list_versions(req: func.HttpRequest) -> func.HttpResponse:
    """Every version of a model (status, metrics, decision)."""
    storage = get_storage()
    versions = [v.to_json() for v in registry.list_versions(storage, _model(req))]
    aliases, _ = registry.get_aliases(storage, _model(req))
    current = {"champion": aliases.champion, "previous": aliases.previous}
    return json_response({"versions": versions, "aliases": current})


@bp.function_name("get_aliases")
@bp.route(route="registry/models/{model}/aliases", methods=["GET"])
@handles_errors
def get_aliases(req: func.HttpRequest) -> func.HttpResponse:
    """champion, previous and the append-only history of every alias change (who, why, when)."""
    storage = get_storage()
    aliases, _ = registry.get_aliases(storage, _model(req))
    if not aliases.history and not registry.model_exists(storage, _model(req)):
        raise NotFound(f"model (name={_model(req)}) not found")
    return json_response(aliases.to_json())


@bp.function_name("get_version")
@bp.route(route="registry/models/{model}/versions/{version:int}", methods=["GET"])
@handles_errors
def get_version(req: func.HttpRequest) -> func.HttpResponse:
    """One version with its full lineage and metrics."""
    return json_response(registry.get_version(get_storage(), _model(req), _version(req)).to_json())


@bp.function_name("list_runs")
@bp.route(route="registry/models/{model}/runs", methods=["GET"])
@handles_errors
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Runs of a model, newest first."""
    return json_response({"runs": [r.to_json() for r in runs.list_runs(get_storage(), _model(req))]})


@bp.function_name("get_run")
@bp.route(route="registry/models/{model}/runs/{run_id}", methods=["GET"])
@handles_errors
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """One run with its status timeline."""
    return json_response(runs.get(get_storage(), _model(req), names.run_id(req.route_params.get("run_id"))).to_json())


@bp.function_name("approve_version")
@bp.route(route="registry/models/{model}/versions/{version:int}/approve", methods=["POST"], auth_level=ADMIN)
@handles_errors
def approve_version(req: func.HttpRequest) -> func.HttpResponse:
    """Promote a version that is pending approval (approving the champion again changes nothing)."""
    model, version = _model(req), _version(req)
    by = names.text_field(json_body(req), "by", default="admin")
    return json_response(releases.approve(app_context(), model, version, by=by).to_json())


@bp.function_name("reject_version")
@bp.route(route="registry/models/{model}/versions/{version:int}/reject", methods=["POST"], auth_level=ADMIN)
@handles_errors
def reject_version(req: func.HttpRequest) -> func.HttpResponse:
    """Reject a version that is pending approval."""
    model, version, body = _model(req), _version(req), json_body(req)
    result = releases.reject(app_context(), model, version, by=names.text_field(body, "by", default="admin"),
                             reason=names.text_field(body, "reason", default=""))
    return json_response(result)


@bp.function_name("rollback")
@bp.route(route="registry/models/{model}/rollback", methods=["POST"], auth_level=ADMIN)
@handles_errors
def rollback(req: func.HttpRequest) -> func.HttpResponse:
    """Back to a former champion: body {"from": <expected champion>, "to": <target>} (both optional).

    409 with the current aliases when the champion is no longer `from` (unless it already is `to`).
    """
    model, body = _model(req), json_body(req)
    outcome = releases.rollback(app_context(), model, body, by=names.text_field(body, "by", default="admin"))
    return json_response(outcome.to_json())


@bp.function_name("request_retrain")
@bp.route(route="registry/models/{model}/retrain", methods=["POST"], auth_level=ADMIN)
@bp.queue_output(arg_name="retrains", queue_name=paths.RETRAIN_QUEUE, connection="AzureWebJobsStorage")
@handles_errors
def request_retrain(req: func.HttpRequest, retrains: func.Out[str]) -> func.HttpResponse:
    """Request a retrain of the current data (the same path queue-triggered retraining takes)."""
    storage = get_storage()
    model = _model(req)
    registry.current_spec(storage, model)  # 404 now rather than a poison message later
    run_id = runs.new_run_id()
    reason = names.text_field(json_body(req), "reason", default="retrain requested via admin API")
    runs.record(storage, app_context().clock, model, run_id, RunStatus.RECEIVED, detail=reason)
    # written by the host once this returns; if that write fails the caller gets a 500 and retries
    retrains.set(message_text(RetrainRequest(model=model, reason=reason, run_id=run_id).to_payload()))
    return json_response({"run_id": run_id, "queued": paths.RETRAIN_QUEUE}, 202)


@bp.function_name("upload_spec")
@bp.route(route="registry/models/{model}/spec", methods=["PUT"], auth_level=ADMIN)
@handles_errors
def upload_spec(req: func.HttpRequest) -> func.HttpResponse:
    """Validate and store a training spec (YAML or JSON body)."""
    model = _model(req)
    filename = "spec.json" if "json" in (req.headers.get("content-type") or "") else "spec.yaml"
    spec = parse_spec(req.get_body(), filename)
    if spec.name != model:
        raise BadRequest(f"spec name {spec.name!r} does not match the route's model {model!r}")
    digest = registry.store_spec(get_storage(), spec, origin={"via": "admin API"})
    return json_response({"model": spec.name, "spec_hash": digest}, 201)
