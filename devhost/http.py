"""HTTP triggers on uvicorn (httptools' parser, uvloop when installed; HTTP/1.1 keep-alive): route templates,
methods, keys, func.HttpRequest. Sync functions run on a pool of threads, as the Python worker runs them; async
functions run on the server's event loop, as the worker runs them on its own. A function's request is read
straight from the ASGI scope (Incoming); webhooks get a werkzeug Request. werkzeug's development server, used
before, answered every request with `Connection: close`, so each request paid a TCP connect (and benchmarks
measured that).

Also the host's extension webhooks, /runtime/webhooks/{extension}[/...] (azure-functions-host
HostController.ExtensionWebHookHandler): GET, POST and DELETE; the `<extension>_extension` system key
or the master key (401 otherwise); 404 for an extension without a webhook handler.
"""
from __future__ import annotations

import asyncio
import codecs
import functools
import hmac
import io
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import azure.functions as func
import uvicorn
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
# Sync functions running at once (threads of the pool); more wait for a thread. The Functions host serves many
# concurrent requests per instance; 16 keeps a blocked function from stalling the webhook or health checks.
HTTP_THREADS = 16
# The Functions host refuses request bodies over 100 MB (HTTP 413), as here.
MAX_REQUEST_BYTES = 100 * 1024 * 1024
# Kestrel, the host's server, keeps an idle connection 130 s (uvicorn's default is 5 s).
KEEP_ALIVE_SECONDS = 130
# Requests still running when the host stops get this long before their connections are closed.
STOP_GRACE_SECONDS = 5
# werkzeug's codec error handler: undecodable bytes stay percent-encoded. werkzeug.urls registers it (werkzeug's
# Request imports that); looked up here so that a werkzeug without it fails at import, not per request.
_KEEP_ESCAPED = "werkzeug.url_quote"
codecs.lookup_error(_KEEP_ESCAPED)
MATCH_CACHE_SIZE = 4096  # (method, path) pairs whose route is remembered
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
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._matched: dict[tuple[str, str], tuple[Route, dict[str, str]] | None] = {}
        self._pool = ThreadPoolExecutor(HTTP_THREADS, thread_name_prefix="devhost-http")

    def start(self, host: str, port: int) -> int:
        """Serve in a background thread; returns the bound port (port 0 picks a free one). OSError when the
        address is taken."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        # log_config=None: uvicorn's own dictConfig would close every handler the host has installed; no proxy sits
        # in front of the local host, so no X-Forwarded-* header is trusted (nor its middleware run per request)
        config = uvicorn.Config(self, interface="asgi3", proxy_headers=False, lifespan="off", ws="none",
                                log_config=None, log_level="warning", access_log=False, server_header=False,
                                timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=STOP_GRACE_SECONDS)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="devhost-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:  # listening once set; a thread that died has logged why
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise OSError(f"the HTTP server did not start on {host}:{port}")
            time.sleep(0.01)
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        """Stop accepting requests and close the connections; requests already running finish on their threads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True  # uvicorn closes idle keep-alive connections, then the busy ones as they answer
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_SECONDS + 5)
        self._pool.shutdown(wait=False)

    def _authorized(self, route: Route, incoming: Incoming) -> bool:
        if not self._auth or route.auth_level == "ANONYMOUS":
            return True
        allowed = [self._master_key] if route.auth_level == "ADMIN" else [*self._function_keys, self._master_key]
        return _key_matches(incoming, allowed)

    def _webhook(self, extension: str, incoming: Incoming) -> Response:
        """An extension webhook: system key `<extension>_extension` or the master key, then its handler."""
        if incoming.method not in WEBHOOK_METHODS:
            return Response(status=405, headers={"Allow": ", ".join(sorted(WEBHOOK_METHODS))})
        name = extension.lower()
        if self._auth and not _key_matches(incoming, [self._system_keys.get(f"{name}_extension"), self._master_key]):
            return Response(status=401)
        handler = self._webhooks.get(name)
        return handler(Request(incoming.environ())) if handler else Response(status=404)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app uvicorn serves: an async function's invocation on this loop, anything else on the pool."""
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(scope, receive)
        except _Disconnected:
            return  # nobody to answer: the function does not run on half a body
        if body is None:
            too_big = Response(f"request body over {MAX_REQUEST_BYTES} bytes (the host's limit)", status=413)
            await _send(send, too_big, Incoming.of(scope, b""))
            return
        incoming = Incoming.of(scope, body)
        webhook = WEBHOOK.match(incoming.path)
        found = None if webhook else self._match(incoming.method, incoming.path)
        if found is not None and found[0].spec.is_async and self._authorized(found[0], incoming):
            answer = await self._invoke_async(*found, incoming)
        else:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._handle, incoming, webhook, found)
        await _send(send, answer, incoming)

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route (in precedence order) that matches the path and allows the method, with its values.

        Remembered per (method, path): clients call the same few URLs over and over, and trying the routes in
        turn took ~6 µs of every scoring call."""
        key = (method, path)
        try:
            return self._matched[key]  # its params reach functions read-only (HttpRequest.route_params)
        except KeyError:
            found = self._matched[key] = self._first_match(method, path)
            if len(self._matched) > MATCH_CACHE_SIZE:
                self._matched.clear()  # a crawler's endless paths cannot grow it without bound
            return found

    def _first_match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            match = route.pattern.match(path)
            # the host's function routes constrain the method: another method matches no route,
            # so the answer is 404 (not 405), as on Azure
            if match and (route.methods is None or method in route.methods):
                return route, {k: v for k, v in match.groupdict().items() if v is not None}
        return None

    def _handle(self, incoming: Incoming, webhook: re.Match[str] | None,
                found: tuple[Route, dict[str, str]] | None) -> Response | FunctionAnswer:
        """Authorize, invoke and convert the function's response, on a thread of the pool."""
        if webhook:
            return self._webhook(webhook.group("extension"), incoming)
        if found is None:
            return Response(status=404)
        route, params = found
        if not self._authorized(route, incoming):
            return Response(status=401)
        try:
            result = self._invoker(route.spec, INVOKE_REASON, incoming.function_request(params))
        except Exception:
            return Response(status=500)  # the invoker logged the exception with the function name
        return _answer(result)

    async def _invoke_async(self, route: Route, params: dict[str, str],
                            incoming: Incoming) -> Response | FunctionAnswer:
        try:
            result = await self._invoker.call_async(route.spec, INVOKE_REASON, incoming.function_request(params))
        except Exception:
            return Response(status=500)  # the invoker logged the exception with the function name
        return _answer(result)


INVOKE_REASON = "This function was programmatically called via the host APIs."


def _answer(result: Any) -> Response | FunctionAnswer:
    """What the function returned, as the host answers it."""
    if isinstance(result, func.HttpResponse):
        # the server counts the body: a Content-Length the function set could only disagree
        headers = [(name, value) for name, value in result.headers.items() if name.lower() != "content-length"]
        if "content-type" not in {name.lower() for name, _ in headers}:
            headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
        return FunctionAnswer(result.status_code, headers, result.get_body())
    if result is None:
        return Response(status=204)
    return Response(result if isinstance(result, (str, bytes)) else str(result), mimetype="text/plain")


class _Disconnected(Exception):
    """The client went away before its request's body was all there."""


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes | None:
    """The request body, or None past MAX_REQUEST_BYTES (by Content-Length before reading, or as it arrives).
    Raises _Disconnected."""
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(frozen=True)
class Incoming:
    """One request as the functions see it, read once from the ASGI scope: no WSGI environ or werkzeug Request
    on a function's path (building them took ~17 µs of every scoring call); webhooks still get a werkzeug
    Request (environ())."""

    scope: dict[str, Any]
    body: bytes
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", " (as WSGI joins them)

    @classmethod
    def of(cls, scope: dict[str, Any], body: bytes) -> Incoming:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return cls(scope, body, scope["method"], scope["path"], headers)

    @functools.cached_property  # the key check may read it before the function's request does
    def params(self) -> dict[str, str]:
        """The query's parameters, the first value of a repeated one (as werkzeug's args.get gives it); bytes that
        are not UTF-8 stay percent-encoded, as werkzeug keeps them."""
        query = self.scope["query_string"]
        if not query:
            return {}
        params: dict[str, str] = {}
        for name, value in parse_qsl(query.decode("utf-8", _KEEP_ESCAPED), keep_blank_values=True,
                                     errors=_KEEP_ESCAPED):
            params.setdefault(name, value)
        return params

    @property
    def url(self) -> str:
        """The request's URL as wsgiref.util.request_uri spells it from the same request."""
        scope = self.scope
        scheme = scope.get("scheme", "http")
        host = self.headers.get("host")
        if not host:
            server_name, port = scope.get("server") or ("127.0.0.1", 80)
            default_port = "443" if scheme == "https" else "80"
            host = f"{server_name}" if str(port) == default_port else f"{server_name}:{port}"
        url = f"{scheme}://{host}{quote(self.path, safe='/;=,')}"
        query = scope["query_string"]
        return f"{url}?{query.decode('latin-1')}" if query else url

    def function_request(self, route_params: dict[str, str]) -> func.HttpRequest:
        return func.HttpRequest(method=self.method, url=self.url, headers=self.headers, params=self.params,
                                route_params=route_params, body=self.body)

    def environ(self) -> dict[str, Any]:
        """A WSGI environ for the request (PEP 3333: the decoded path's bytes as latin-1 text)."""
        scope = self.scope
        server = scope.get("server") or ("127.0.0.1", 80)
        client = scope.get("client") or ("", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method, "SCRIPT_NAME": "",
            "PATH_INFO": self.path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1]), "REMOTE_ADDR": str(client[0]),
            "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}", "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"), "wsgi.input": io.BytesIO(self.body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
        return environ


def _no_write(data: bytes) -> None:
    raise NotImplementedError("answers return their body; none uses WSGI's write()")


async def _send(send: Any, answer: Response | FunctionAnswer, incoming: Incoming) -> None:
    """Write the answer (werkzeug's Response, through WSGI, or a FunctionAnswer as is) as the ASGI response."""
    if isinstance(answer, FunctionAnswer):
        status, headers, body = answer.status, answer.encoded_headers(), answer.body
        if incoming.method == "HEAD":
            body = b""
    else:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            started.append((status, headers))
            return _no_write

        body = b"".join(answer(incoming.environ(), start_response))
        status = int(started[-1][0].split(" ", 1)[0])
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in started[-1][1]]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class FunctionAnswer:
    """A function's HttpResponse as the server sends it, as is: status, its headers, its body.

    Written straight to the server instead of through werkzeug's Response, whose header normalisation
    cost ~30 µs of every scoring round trip here and changes nothing the function set.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def encoded_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as the server sends them, with the body's Content-Length."""
        return [*((name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers),
                (b"content-length", str(len(self.body)).encode())]


def _key_matches(incoming: Incoming, allowed: Iterable[str | None]) -> bool:
    """The request's key (x-functions-key header or ?code=) is one of `allowed`."""
    key = incoming.headers.get("x-functions-key") or incoming.params.get("code") or ""
    return any(k and hmac.compare_digest(key.encode(), k.encode()) for k in allowed)
