"""The HTTP API, and what its failures mean for the person at the terminal (unreachable, keys, 4xx bodies)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from mlops_cli.errors import FAILED, UNREACHABLE, USAGE, CliError
from mlops_cli.target import Key, Target

# 503s that mean the service cannot serve at all (not an answer about the thing asked for).
_SERVICE_DOWN = frozenset({"STORAGE_UNREACHABLE", "CONFIGURATION"})


class Api:
    """JSON over HTTP with the function key, or the admin key for changes."""

    def __init__(self, target: Target, *, timeout: float = 60.0, session: requests.Session | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self._session = session or requests.Session()

    def get(self, *segments: str | int, admin: bool = False, params: dict[str, str] | None = None) -> Any:
        return self.call("GET", *segments, admin=admin, params=params)

    def post(self, *segments: str | int, admin: bool = False, **kwargs: Any) -> Any:
        return self.call("POST", *segments, admin=admin, **kwargs)

    def call(self, method: str, *segments: str | int, admin: bool = False, **kwargs: Any) -> Any:
        """The JSON answer of a 2xx. Raises CliError for anything else, with the exit code it means."""
        response = self.response(method, *segments, admin=admin, **kwargs)
        return _json(response) if response.content else {}

    def response(self, method: str, *segments: str | int, admin: bool = False, **kwargs: Any) -> requests.Response:
        """The raw 2xx response (headers too). Raises CliError."""
        route = "/".join(quote(str(s), safe="") for s in segments)
        key = self.target.admin_key if admin else self.target.key
        headers = {**kwargs.pop("headers", {}), **({"x-functions-key": key.value} if key.value else {})}
        try:
            response = self._session.request(method, f"{self.target.url}/{route}", headers=headers,
                                             timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        except requests.Timeout:
            raise CliError(f"{self.target.label()} did not answer {method} /{route} within {self.timeout:g} s; "
                           "it may be busy or stopped: try again", UNREACHABLE) from None
        except requests.ConnectionError:
            raise unreachable(self.target) from None
        except requests.RequestException as exc:  # a URL requests cannot send to, a redirect loop, ...
            raise CliError(f"{method} /{route} to {self.target.label()} could not be sent: {type(exc).__name__}: "
                           f"{exc}; check the URL (--url, MLOPS_URL or the profile)", UNREACHABLE) from None
        if response.status_code >= 400:
            raise failure(response, self.target, admin=admin, route=f"{method} /{route}")
        return response


def unreachable(target: Target) -> CliError:
    hint = ("start the local host with `make run` in the repository (it serves on :7071)" if target.local else
            "check the URL (it ends in /api) and that the app is running")
    return CliError(f"cannot reach the API at {target.url} (target {target.name}): nothing answered; {hint}, "
                    "or choose another target with --url, MLOPS_URL or --profile", UNREACHABLE)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:2000]}


def json_of(response: requests.Response, target: Target) -> dict[str, Any]:
    """A 2xx answer's JSON object. Raises CliError when it is something else (a proxy's page, say)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CliError(f"{target.label()} answered {response.status_code} with no JSON object "
                       f"({response.headers.get('content-type') or 'no content type'}); is the URL the app's /api?",
                       FAILED)
    return body


def failure(response: requests.Response, target: Target, *, admin: bool, route: str) -> CliError:
    """The CliError a non-2xx answer means."""
    status = response.status_code
    body = _json(response) if response.content else {}
    body = body if isinstance(body, dict) else {"body": body}
    if status in (401, 403):
        return _refused_key(target, admin, status)
    if status == 404 and not body:
        return CliError(f"{target.label()} has no route {route} (404): check that the URL ends in /api and that "
                        "the app is up to date", UNREACHABLE, status=status)
    message = str(body.get("message") or body.get("text") or response.reason or f"HTTP {status}")
    lines = _detail_lines(body.get("details"))
    error_code = str(body.get("error_code") or "")
    return CliError(f"{message} ({status}{' ' + error_code if error_code else ''})", _exit_code(status, error_code),
                    lines=lines, body=body, status=status)


def _exit_code(status: int, error_code: str) -> int:
    if error_code == "INVALID_PARAMETER_VALUE":
        return USAGE
    if status >= 500 and (not error_code or error_code in _SERVICE_DOWN):
        return UNREACHABLE  # a proxy's error page, storage down, configuration missing: nothing works yet
    return FAILED


def _refused_key(target: Target, admin: bool, status: int) -> CliError:
    key: Key = target.admin_key if admin else target.key
    which = "admin (master) key" if admin else "function key"
    options = ("--admin-key, MLOPS_ADMIN_KEY, or admin_key_env in the profile" if admin else
               "--key, MLOPS_KEY, or key_env in the profile")
    if key.value is None:
        said = f"no {which} was sent (none configured)"
    else:
        said = f"the {which} from {key.origin} was refused"
    why = " (this command changes something: it needs the admin key, a function key is not enough)" if admin else ""
    return CliError(f"{target.label()} answered {status}: {said}{why}; set it with {options}",
                    UNREACHABLE, status=status)


def _detail_lines(details: Any) -> list[str]:
    """An error body's details as lines: spec field errors as 'field: message', anything else as it is."""
    if isinstance(details, list):
        return [f"{d.get('field') or d.get('column') or '-'}: {d.get('message')}" if isinstance(d, dict) else str(d)
                for d in details]
    if isinstance(details, dict):
        problems = details.get("problems")
        if isinstance(problems, list):
            return _detail_lines(problems)
        return [f"{k}: {v}" for k, v in details.items()]
    return [] if details is None else [str(details)]
