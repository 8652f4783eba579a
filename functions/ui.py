"""Model pages in the browser: the models list, one model's page, and their static files.

The pages take the function key (?code= or x-functions-key) like every function and carry ?code= on
their links; their actions call the admin API with the admin key in a header. Static files are
anonymous: an allow-list of our own JS/CSS and the vendored Chart.js, no data. The view models and
the templates (Jinja2) load on the first page request: importing the app loads shared/ui/serve.py only.
"""
from __future__ import annotations

import azure.functions as func

from shared import names
from shared.settings import get_settings
from shared.storage import get_storage
from shared.ui import serve

bp = func.Blueprint()


@bp.function_name("ui_models")
@bp.route(route="ui", methods=["GET"])
@serve.handles_page_errors
def ui_models(req: func.HttpRequest) -> func.HttpResponse:
    """Every model: champion, latest run, pending approvals, drift."""
    from shared.ui import render, views

    page = views.load_models_page(get_storage(), serve.links_for(req))
    return serve.html_response(render.models_html(page))


@bp.function_name("ui_model")
@bp.route(route="ui/models/{model}", methods=["GET"])
@serve.handles_page_errors
def ui_model(req: func.HttpRequest) -> func.HttpResponse:
    """One model: versions, gates, lineage, holdout charts, drift, runs; ?version=N selects a version."""
    from shared.ui import reads, render, views

    model = names.model_name(req.route_params.get("model"))
    raw = req.params.get("version")
    version = None if raw is None else names.version(raw, what="query parameter version")
    page = views.load_model_page(get_storage(), model, version, serve.links_for(req),
                                 reads.repository_links(get_settings()))
    return serve.html_response(render.model_html(page))


@bp.function_name("ui_static")
@bp.route(route="ui/static/{file}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ui_static(req: func.HttpRequest) -> func.HttpResponse:
    """An allow-listed static file with long cache headers; any other name is 404."""
    file = serve.static_file(req.route_params.get("file") or "")
    if file is None:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain", charset="utf-8",
                                 headers={"X-Content-Type-Options": "nosniff"})
    headers = serve.static_headers(file)
    if req.headers.get("if-none-match") == headers["ETag"]:
        return func.HttpResponse(status_code=304, headers=headers)
    return func.HttpResponse(file.data, status_code=200, headers=headers, mimetype=file.mimetype, charset="utf-8")
