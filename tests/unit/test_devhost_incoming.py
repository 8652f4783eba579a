"""devhost reads a function's request straight from the ASGI scope: the same URL, query parameters and headers
that the WSGI environ, wsgiref and werkzeug gave before (webhooks still get a werkzeug Request from it)."""
from __future__ import annotations

from typing import Any
from wsgiref.util import request_uri

from hypothesis import given
from hypothesis import strategies as st
from werkzeug.wrappers import Request

from devhost.http import Incoming


def scope(path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": headers,
            "server": ("127.0.0.1", 7071), "client": ("127.0.0.1", 50000), "http_version": "1.1", "scheme": "http"}


def as_werkzeug(incoming: Incoming) -> tuple[str, dict[str, str], dict[str, str]]:
    request = Request(incoming.environ())
    headers = {name.lower(): value for name, value in request.headers.items()}
    return request_uri(request.environ), {k: request.args.get(k, "") for k in request.args}, headers


HOST = [(b"host", b"127.0.0.1:7071")]


def test_a_typical_scoring_request_reads_as_werkzeug_read_it() -> None:
    incoming = Incoming.of(scope("/api/models/breast-cancer/score", b"version=3&code=k",
                                 [*HOST, (b"content-type", b"application/json"), (b"x-request-id", b"r-1")]), b"{}")
    assert (incoming.url, incoming.params, incoming.headers) == as_werkzeug(incoming)
    assert incoming.params == {"version": "3", "code": "k"}
    assert incoming.url == "http://127.0.0.1:7071/api/models/breast-cancer/score?version=3&code=k"


def test_repeated_headers_and_parameters_read_as_werkzeug_read_them() -> None:
    incoming = Incoming.of(scope("/api/x", b"a=1&a=2&b=&c+d=e%20f&%ff=x",
                                 [*HOST, (b"accept", b"text/csv"), (b"Accept", b"application/json")]), b"")
    assert (incoming.url, incoming.params, incoming.headers) == as_werkzeug(incoming)
    assert incoming.params["a"] == "1" and incoming.headers["accept"] == "text/csv, application/json"


def test_without_a_host_header_the_url_names_the_server() -> None:
    incoming = Incoming.of(scope("/api/ünï code/a b", b"", []), b"")
    assert incoming.url == as_werkzeug(incoming)[0] == "http://127.0.0.1:7071/api/%C3%BCn%C3%AF%20code/a%20b"


@given(path=st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=30),
       query=st.binary(max_size=40).map(lambda raw: raw.replace(b"#", b"")))
def test_any_path_and_query_read_as_werkzeug_read_them(path: str, query: bytes) -> None:
    incoming = Incoming.of(scope("/api/" + path, query, HOST), b"")
    try:
        query.decode()
    except UnicodeDecodeError:  # werkzeug raises on raw bytes that are not UTF-8 (a 500); here they stay escaped
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in incoming.params.items())
        return
    assert (incoming.url, incoming.params, incoming.headers) == as_werkzeug(incoming)
