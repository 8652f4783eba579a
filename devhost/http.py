"""HTTP triggers on waitress (HTTP/1.1 keep-alive, a pool of worker threads): route templates, methods, keys,
func.HttpRequest. werkzeug's Request/Response shape the WSGI side; its development server answered every
request with `Connection: close`, so each request paid a TCP connect (and benchmarks measured that).

Also the host's extension webhooks, /runtime/webhooks/{extension}[/...] (azure-functions-host
HostController.ExtensionWebHookHandler): GET, POST and DELETE; the `<extension>_extension` system key
or the master key (401 otherwise); 404 for an extension without a webhook handler.
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from wsgiref.util import request_uri

import azure.functions as func
from waitress.server import create_server  # type: ignore[import-untyped]
from werkzeug.wrappers import Request, Response

from devhost.index import FunctionSpec, Invoker

log = logging.getLogger("devhost")

# ASP.NET route constraints the Functions host accepts, as regular expressions.
CONSTRAINTS = {
    "int": r"-?\d+", "long": r"-?\d+", "alpha": r"[A-Za-z]+", "bool": r"(?:true|false)",
    "guid": r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}",
    "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?", "decimal": r"-?\d+(?:\.\d+)?",
}
WEBHOOK = re.compile(r"^/runtime/webhooks/(?P<extension>[^/]+)(?:/.*)?$", re.IGNORECASE)
WEBHOOK_METHODS = frozenset({"GET", "POST", "DELETE"})
WebhookHandler = Callable[[Request], Response]
# Requests served at once (waitress worker threads); more wait in its queue. The Functions host serves many
# concurrent requests per instance; 16 keeps a blocked function from stalling the webhook or health checks.
HTTP_THREADS = 16
# waitress reads 8 KiB per recv and moves bodies over 512 KiB (answers over 1 MiB) to temporary files: a
# 2 MB batch scoring body took ~260 reads and a disk round trip each way. Bodies up to the scoring limit's
# default (5 MiB) and their answers stay in memory; bigger ones still spill.
RECV_BYTES = 256 * 1024
BUFFERED_BYTES = 16 * 1024 * 1024
PARAM = re.compile(r"\{(\*{1,2})?(\w+)((?::[^{}?=]+)*)(\?)?(?:=[^{}]*)?\}")


@dataclass(frozen=True)
class Route:
    """One HTTP function's route, compiled."""

    spec: FunctionSpec
    path: str  # prefix/template, as printed at start
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str
    precedence: tuple[int, ...]


def _segment(seg: str, where: str) -> tuple[str, int, bool]:
    """(regex, precedence rank, optional) of one route segment."""
    m = PARAM.fullmatch(seg)
    if m and m.group(1):  # catch-all {*rest}
        return f"(?P<{m.group(2)}>.*)", 4, True
    parts, pos, rank = [], 0, 0
    for p in PARAM.finditer(seg):
        parts.append(re.escape(seg[pos:p.start()]))
        constraint = p.group(3).lstrip(":").split(":")[0] if p.group(3) else ""
        if constraint and constraint not in CONSTRAINTS:
            log.warning("%s: route constraint :%s is not enforced by devhost", where, constraint)
        parts.append(f"(?P<{p.group(2)}>{CONSTRAINTS.get(constraint, '[^/]+')})")
        rank, pos = max(rank, 1 if constraint else 2), p.end()
    parts.append(re.escape(seg[pos:]))
    optional = bool(m and m.group(4))
    return "".join(parts), 3 if optional else rank, optional


def compile_route(spec: FunctionSpec, prefix: str) -> Route:
    """Compile the binding's route template (default: the function name) under the route prefix."""
    template = str(spec.trigger.get("route") or spec.name).strip("/")
    segments = [s for s in (prefix.split("/") if prefix else []) + template.split("/") if s]
    regex, ranks = "", []
    for seg in segments:
        part, rank, optional = _segment(seg, f"function {spec.name}")
        regex += f"(?:/{part})?" if optional else f"/{part}"
        ranks.append(rank)
    methods = spec.trigger.get("methods")
    return Route(
        spec=spec, path="/".join(p for p in (prefix, template) if p),
        pattern=re.compile(f"^{regex}/?$", re.IGNORECASE),  # ASP.NET routing ignores case
        methods=frozenset(m.upper() for m in methods) if methods else None,
        auth_level=str(spec.trigger.get("authLevel", "FUNCTION")).upper(),
        precedence=tuple(ranks),
    )


class HttpHost:
    """The WSGI app that routes requests to HTTP-triggered functions, and its server."""

    def __init__(
        self, specs: Iterable[FunctionSpec], invoker: Invoker, *, route_prefix: str,
        function_keys: dict[str, str], master_key: str | None, auth: bool,
        system_keys: Mapping[str, str] | None = None, webhooks: Mapping[str, WebhookHandler] | None = None,
    ) -> None:
        routes = [compile_route(s, route_prefix) for s in specs]
        # literal segments win over constrained, then plain, optional and catch-all parameters
        self.routes = sorted(routes, key=lambda r: (r.precedence, -len(r.precedence)))
        self._invoker = invoker
        self._function_keys = list(function_keys.values())
        self._master_key = master_key
        self._auth = auth
        self._system_keys = dict(system_keys or {})
        self._webhooks = {name.lower(): handler for name, handler in (webhooks or {}).items()}
        self._server: Any = None  # waitress's server (MultiSocketServer | BaseWSGIServer)
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Serve in a background thread; returns the bound port (port 0 picks a free one)."""
        logging.getLogger("waitress").setLevel(logging.WARNING)  # no "Serving on" or queue-depth chatter
        # send_bytes=1: the worker thread that ran the function sends the response itself; by default waitress
        # leaves answers under 18 KB to its I/O thread, one more thread hand-off (~50 µs) per request. Deprecated
        # in waitress 3 (pinned in requirements-dev.txt), hence the warning filter.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
            self._server = create_server(self, host=host, port=port, threads=HTTP_THREADS, ident="devhost",
                                         send_bytes=1, recv_bytes=RECV_BYTES, inbuf_overflow=BUFFERED_BYTES,
                                         outbuf_overflow=BUFFERED_BYTES)
        server = self._server
        self._thread = threading.Thread(target=server.run, name="devhost-http", daemon=True)
        self._thread.start()
        return int(server.effective_port)

    def stop(self) -> None:
        """Stop accepting requests and close the connections; requests already running finish on their threads."""
        server, self._server = self._server, None
        if server is None:
            return
        # waitress has no stop call: its loop runs while its socket map has entries, and only the loop's own thread
        # may close them (closed under its select() they fail with EBADF). The trigger runs a callable on that
        # thread: open connections get handle_close, then the listener and the trigger itself close() (the
        # listener's handle_close is the base one, which only logs "unhandled close event").
        def close_all() -> None:
            for dispatcher in list(server._map.values()):
                if dispatcher is not server and dispatcher is not server.trigger:
                    dispatcher.handle_close()
            server.close()

        thread = self._thread
        if thread is not None and thread.is_alive():
            server.trigger.pull_trigger(close_all)
            thread.join(timeout=5)
        else:
            close_all()
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=1)

    def _authorized(self, route: Route, request: Request) -> bool:
        if not self._auth or route.auth_level == "ANONYMOUS":
            return True
        allowed = [self._master_key] if route.auth_level == "ADMIN" else [*self._function_keys, self._master_key]
        return _key_matches(request, allowed)

    def _webhook(self, extension: str, request: Request) -> Response:
        """An extension webhook: system key `<extension>_extension` or the master key, then its handler."""
        if request.method not in WEBHOOK_METHODS:
            return Response(status=405, headers={"Allow": ", ".join(sorted(WEBHOOK_METHODS))})
        name = extension.lower()
        if self._auth and not _key_matches(request, [self._system_keys.get(f"{name}_extension"), self._master_key]):
            return Response(status=401)
        handler = self._webhooks.get(name)
        return handler(request) if handler else Response(status=404)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self.handle(request)(environ, start_response)

    def handle(self, request: Request) -> Response | FunctionAnswer:
        """Route, authorize, invoke and convert the function's response."""
        webhook = WEBHOOK.match(request.path)
        if webhook:
            return self._webhook(webhook.group("extension"), request)
        for route in self.routes:
            match = route.pattern.match(request.path)
            # the host's function routes constrain the method: another method matches no route,
            # so the answer is 404 (not 405), as on Azure
            if not match or (route.methods is not None and request.method not in route.methods):
                continue
            if not self._authorized(route, request):
                return Response(status=401)
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return self._invoke(route, request, params)
        return Response(status=404)

    def _invoke(self, route: Route, request: Request, params: dict[str, str]) -> Response | FunctionAnswer:
        environ = request.environ
        req = func.HttpRequest(
            method=request.method, url=request_uri(environ), headers=_request_headers(environ),
            params={k: request.args.get(k, "") for k in request.args} if environ.get("QUERY_STRING") else {},
            route_params=params, body=request.get_data(),
        )
        try:
            result = self._invoker(route.spec, "This function was programmatically called via the host APIs.", req)
        except Exception:
            return Response(status=500)  # the invoker logged the exception with the function name
        if isinstance(result, func.HttpResponse):
            # the server counts the body: a Content-Length the function set could only disagree
            headers = [(name, value) for name, value in result.headers.items() if name.lower() != "content-length"]
            if "content-type" not in {name.lower() for name, _ in headers}:
                headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
            return FunctionAnswer(result.status_code, headers, result.get_body())
        if result is None:
            return Response(status=204)
        return Response(result if isinstance(result, (str, bytes)) else str(result), mimetype="text/plain")


@dataclass(frozen=True)
class FunctionAnswer:
    """A function's HttpResponse as a WSGI answer, as is: status, its headers, its body.

    Written straight to the server instead of through werkzeug's Response, whose header normalisation
    cost ~30 µs of every scoring round trip here and changes nothing the function set.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:  # a status code Python does not name (e.g. 299): the line still needs a phrase
            phrase = "Unknown"
        start_response(f"{self.status} {phrase}", [*self.headers, ("Content-Length", str(len(self.body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


def _request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers from the WSGI environ (lower-case names, as func.HttpRequest keeps them)."""
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _key_matches(request: Request, allowed: Iterable[str | None]) -> bool:
    """The request's key (x-functions-key header or ?code=) is one of `allowed`."""
    key = request.headers.get("x-functions-key") or request.args.get("code") or ""
    return any(k and hmac.compare_digest(key.encode(), k.encode()) for k in allowed)
