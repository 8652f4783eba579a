"""Git webhooks: GitHub and Azure DevOps pushes retrain models at the pushed commit."""
from __future__ import annotations

import logging

import azure.functions as func

from shared.errors import PayloadTooLarge
from shared.git_push import handle_push, spec_source
from shared.http import handles_errors, json_response
from shared.settings import Need, Settings, get_settings
from shared.storage import get_storage
from shared.webhooks import (
    MAX_BODY_BYTES,
    Ignored,
    Ping,
    PushEvent,
    parse_azure_devops,
    parse_github,
    verify_azure_devops,
    verify_github_signature,
)

bp = func.Blueprint()
# Webhook senders cannot send a function key; the HMAC signature / credentials are the auth.
ANONYMOUS = func.AuthLevel.ANONYMOUS


def _body(req: func.HttpRequest) -> bytes:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"webhook body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    return body


def _act_on(event: PushEvent | Ignored, settings: Settings, provider: str) -> func.HttpResponse:
    """202 with the reason for an ignored delivery, or with what the push started."""
    if isinstance(event, Ignored):
        logging.info("%s webhook ignored: %s", provider, event.reason)
        return json_response({"status": "ignored", "reason": event.reason}, 202)
    settings.require(Need.STORAGE, Need.GIT_SOURCE)  # a push must not be lost to a 500: 503 makes the sender retry
    result = handle_push(get_storage(), settings, event, spec_source(settings))
    logging.info("%s webhook %s: %s", provider, event.delivery_id, result["status"])
    return json_response(result, 202)


@bp.function_name("github_webhook")
@bp.route(route="webhooks/github", methods=["POST"], auth_level=ANONYMOUS)
@handles_errors
def github_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Verify X-Hub-Signature-256, then act on ping / push."""
    settings = get_settings()
    settings.require(Need.GITHUB_WEBHOOK)  # fail closed: no secret, no delivery accepted
    body = _body(req)
    verify_github_signature(settings.github_webhook_secret or "", body, req.headers.get("x-hub-signature-256"))
    event = parse_github(req.headers.get("x-github-event"), req.headers.get("x-github-delivery"), body,
                         settings.git_branch, repository=settings.github_repository)
    if isinstance(event, Ping):
        return json_response({"status": "pong", "zen": event.zen})
    return _act_on(event, settings, "github")


@bp.function_name("azure_devops_webhook")
@bp.route(route="webhooks/azure-devops", methods=["POST"], auth_level=ANONYMOUS)
@handles_errors
def azure_devops_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Verify Basic credentials / the shared-secret header, then act on git.push / PR merged."""
    settings = get_settings()
    settings.require(Need.ADO_WEBHOOK)
    body = _body(req)
    verify_azure_devops(req.headers, basic_user=settings.ado_webhook_user, basic_password=settings.ado_webhook_password,
                        shared_secret=settings.ado_webhook_secret)
    event = parse_azure_devops(body, settings.git_branch, repository=settings.ado_repository)
    return _act_on(event, settings, "azure devops")
