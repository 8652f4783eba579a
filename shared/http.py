"""HTTP helpers shared by every HTTP function: JSON responses and one error mapping."""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import azure.functions as func

from shared.errors import PipelineError

P = ParamSpec("P")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json", headers=headers,
    )


def error_response(exc: PipelineError) -> func.HttpResponse:
    """MLflow-shaped error body: {"error_code", "message"} (+ details when present)."""
    body: dict[str, Any] = {"error_code": exc.code, "message": exc.message}
    if exc.details is not None:
        body["details"] = exc.details
    return json_response(body, exc.status)


def handles_errors(handler: Callable[P, func.HttpResponse]) -> Callable[P, func.HttpResponse]:
    """Map our typed errors to their HTTP status; anything else is a logged 500 with no internals.

    The wrapper keeps the handler's signature (functools.wraps), which is what the worker binds
    parameters by: an output binding next to the request passes straight through.
    """

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> func.HttpResponse:
        try:
            return handler(*args, **kwargs)
        except Exception as exc:
            return _error_answer(handler.__name__, exc)

    return wrapper


def handles_errors_async(
    handler: Callable[P, Awaitable[func.HttpResponse]],
) -> Callable[P, Awaitable[func.HttpResponse]]:
    """handles_errors for an async function: the wrapper stays a coroutine function, which is how the worker
    (and devhost) know to run it on the event loop."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> func.HttpResponse:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            return _error_answer(handler.__name__, exc)

    return wrapper


def _error_answer(name: str, exc: Exception) -> func.HttpResponse:
    if isinstance(exc, PipelineError):
        if exc.status >= 500:
            logging.error("%s: %s", name, exc.internal or exc.message)
        return error_response(exc)
    logging.error("%s: unexpected error", name, exc_info=exc)
    body = {"error_code": "INTERNAL_ERROR", "message": "internal error; see the function logs"}
    return json_response(body, 500)


def json_body(req: func.HttpRequest) -> dict[str, Any]:
    """The request's JSON object body ({} when empty). Raises BadRequest."""
    from shared.errors import BadRequest

    raw = req.get_body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body

