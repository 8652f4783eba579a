"""GET /api/health (anonymous): ok or degraded, nothing more; GET /api/health/details (admin key): why."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.health import check_health
from shared.http import json_response

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """{"status": "ok" | "degraded"}: 503 when degraded, so a load balancer's probe can act on it."""
    report = check_health()
    if report.status != "ok":
        logging.warning("health: degraded: %s", report.problems())
    return json_response({"status": report.status}, 200 if report.status == "ok" else 503)


@bp.function_name("health_details")
@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    """Storage endpoint and error, configuration problems per need, versions: for operators only."""
    report = check_health()
    return json_response(report.details(), 200 if report.status == "ok" else 503)
