"""The local host's HTTP triggers: routes from the bindings, constraints, methods, auth levels, errors."""
from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from devhost import DevHost
from devhost.azurite import Azurite
from devhost.http import MAX_REQUEST_BYTES, HttpHost
from devhost.index import FunctionSpec, Invoker
from tests.fixtures.devhost_support import FUNCTION_KEY, MASTER_KEY, SEMANTICS_APP, fixture_env


@pytest.fixture(scope="module")
def host(azurite: Azurite) -> Iterator[DevHost]:
    with DevHost(SEMANTICS_APP, env=fixture_env(azurite, uuid.uuid4().hex[:8]), port=0) as h:
        yield h


@pytest.fixture(scope="module")
def open_host(azurite: Azurite) -> Iterator[DevHost]:
    with DevHost(SEMANTICS_APP, env=fixture_env(azurite, uuid.uuid4().hex[:8]), port=0, auth=False) as h:
        yield h


def get(host: DevHost, path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"{host.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


def test_route_params_query_and_headers_reach_the_function_as_a_real_http_request(host: DevHost) -> None:
    r = get(host, "/api/items/42?x=1", headers={"x-functions-key": FUNCTION_KEY, "x-test": "hi"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-echo"] == "1"
    assert r.json() == {"route": {"id": "42"}, "query": {"x": "1"}, "method": "GET", "header": "hi"}


def test_int_constraint_rejects_a_non_number_with_404(host: DevHost) -> None:
    assert get(host, "/api/items/abc", headers={"x-functions-key": FUNCTION_KEY}).status_code == 404


def test_unknown_method_on_a_route_is_404_like_the_host(host: DevHost) -> None:
    # the host's routes constrain the method: DELETE matches no route, as an unknown path does
    r = requests.delete(f"{host.url}/api/items/1", headers={"x-functions-key": FUNCTION_KEY}, timeout=10)
    assert r.status_code == 404
    assert "Allow" not in r.headers
    assert requests.post(f"{host.url}/api/greet/ada", timeout=10).status_code == 404
    assert get(host, "/api/nothing-here").status_code == 404
    assert get(host, "/api/items/1", headers={"x-functions-key": FUNCTION_KEY}).status_code == 200


def test_post_body_is_passed_and_the_status_code_returned(host: DevHost) -> None:
    r = requests.post(f"{host.url}/api/items", json={"a": 1}, headers={"x-functions-key": FUNCTION_KEY}, timeout=10)
    assert (r.status_code, r.json()) == (201, {"a": 1})


def test_alpha_constraint_optional_segment_and_catch_all(host: DevHost) -> None:
    assert get(host, "/api/greet/ada").json() == {"name": "ada"}
    assert get(host, "/api/greet/ada/dr").json() == {"name": "ada", "title": "dr"}
    assert get(host, "/api/greet/ada1").status_code == 404
    assert get(host, "/api/files/a/b/c.txt").text == "a/b/c.txt"
    assert requests.put(f"{host.url}/api/files/x", timeout=10).status_code == 200


def test_routes_match_case_insensitively_like_aspnet_routing(host: DevHost) -> None:
    assert get(host, "/API/Greet/ada").status_code == 200


def test_function_level_needs_a_key(host: DevHost) -> None:
    assert get(host, "/api/items/1").status_code == 401
    assert get(host, "/api/items/1", headers={"x-functions-key": "wrong"}).status_code == 401
    assert get(host, "/api/items/1", headers={"x-functions-key": FUNCTION_KEY}).status_code == 200
    assert get(host, f"/api/items/1?code={FUNCTION_KEY}").status_code == 200


def test_master_key_passes_function_level_and_only_it_passes_admin_level(host: DevHost) -> None:
    assert get(host, "/api/items/1", headers={"x-functions-key": MASTER_KEY}).status_code == 200
    url = f"{host.url}/api/admin-ping"
    assert requests.post(url, headers={"x-functions-key": FUNCTION_KEY}, timeout=10).status_code == 401
    assert requests.post(url, headers={"x-functions-key": MASTER_KEY}, timeout=10).text == "pong"


def test_no_auth_serves_every_level_as_anonymous(open_host: DevHost) -> None:
    assert get(open_host, "/api/items/1").status_code == 200
    assert requests.post(f"{open_host.url}/api/admin-ping", timeout=10).status_code == 200


def test_unhandled_exception_is_500_and_logged_with_the_function_name(
    host: DevHost, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="devhost"):
        assert get(host, "/api/boom").status_code == 500
    failed = [r for r in caplog.records if "Functions.boom" in r.getMessage() and "Failed" in r.getMessage()]
    assert failed and failed[0].exc_info and "boom on purpose" in str(failed[0].exc_info[1])
    assert any("Executing 'Functions.boom'" in r.getMessage() for r in caplog.records)


def test_the_function_list_is_printed_with_urls_from_the_bindings(
    host: DevHost, capsys: pytest.CaptureFixture[str],
) -> None:
    host._print_functions()
    out = capsys.readouterr().out
    assert f"  get_item: [GET] {host.url}/api/items/{{id:int}}" in out
    assert "  flaky: queueTrigger" in out and "  tick: timerTrigger" in out


def test_two_requests_reuse_one_keep_alive_connection(host: DevHost) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        answers = []
        for _ in range(2):
            conn.request("GET", "/api/greet/ada")
            response = conn.getresponse()
            answers.append((response.status, response.getheader("connection"), response.read()))
            if len(answers) == 1:
                first_socket = conn.sock
        assert first_socket is not None and conn.sock is first_socket  # http.client reconnects after a close
        assert [(s, c) for s, c, _ in answers] == [(200, None), (200, None)]  # HTTP/1.1: open unless said
    finally:
        conn.close()


def test_concurrent_requests_are_served_in_parallel() -> None:
    """Two requests that each wait for the other can only both succeed if the server runs them at once."""
    both_in = threading.Barrier(2, timeout=10)

    def invoke(spec: FunctionSpec, reason: str, req: func.HttpRequest) -> func.HttpResponse:
        both_in.wait()
        return func.HttpResponse(req.route_params["n"])

    spec = FunctionSpec(name="wait", trigger={"type": "httpTrigger", "route": "wait/{n}", "authLevel": "ANONYMOUS"},
                        bindings=(), user_function=lambda req: None, wants_context=False)
    server = HttpHost([spec], invoke, route_prefix="api", function_keys={}, master_key=None,  # type: ignore[arg-type]
                      auth=False)
    port = server.start("127.0.0.1", 0)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda n: requests.get(f"http://127.0.0.1:{port}/api/wait/{n}", timeout=20),
                                    ["1", "2"]))
        assert [(a.status_code, a.text) for a in answers] == [(200, "1"), (200, "2")]
    finally:
        server.stop()


def test_a_function_s_response_goes_out_with_its_status_headers_and_body_as_set() -> None:
    """The answer is written as the function made it: its headers and status (even one Python has no name for),
    Content-Type from mimetype and charset unless set, and a Content-Length the server counted."""
    answers = {
        "typed": func.HttpResponse(b'{"a": 1}', status_code=201, headers={"x-model-version": "3"},
                                   mimetype="application/json"),
        "odd": func.HttpResponse("é", status_code=299, headers={"Content-Type": "text/csv", "Content-Length": "99"}),
    }

    def invoke(spec: FunctionSpec, reason: str, req: func.HttpRequest) -> func.HttpResponse:
        assert req.headers.get("x-custom") == "yes" and req.headers.get("content-type") == "text/plain"
        assert req.params == ({"q": "1"} if req.route_params["kind"] == "typed" else {})
        return answers[req.route_params["kind"]]

    spec = FunctionSpec(name="answer", trigger={"type": "httpTrigger", "route": "answer/{kind}",
                                                "authLevel": "ANONYMOUS"},
                        bindings=(), user_function=lambda req: None, wants_context=False)
    server = HttpHost([spec], invoke, route_prefix="api", function_keys={}, master_key=None,  # type: ignore[arg-type]
                      auth=False)
    port = server.start("127.0.0.1", 0)
    try:
        headers = {"x-custom": "yes", "content-type": "text/plain"}
        typed = requests.post(f"http://127.0.0.1:{port}/api/answer/typed?q=1", data=b"x", headers=headers, timeout=10)
        odd = requests.post(f"http://127.0.0.1:{port}/api/answer/odd", data=b"x", headers=headers, timeout=10)
        head = requests.head(f"http://127.0.0.1:{port}/api/answer/odd", headers=headers, timeout=10)
    finally:
        server.stop()
    assert (typed.status_code, typed.content, typed.headers["x-model-version"]) == (201, b'{"a": 1}', "3")
    assert typed.headers["content-type"] == "application/json; charset=utf-8"
    assert (odd.status_code, odd.content, odd.headers["content-type"]) == (299, "é".encode(), "text/csv")
    assert odd.headers["content-length"] == str(len("é".encode()))
    assert (head.status_code, head.content, head.headers["content-length"]) == (299, b"", "2")


def test_stopping_closes_listener_and_open_connections_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    spec = FunctionSpec(name="ping", trigger={"type": "httpTrigger", "route": "ping", "authLevel": "ANONYMOUS"},
                        bindings=(), user_function=lambda req: None, wants_context=False)
    server = HttpHost([spec], lambda spec, reason, req: func.HttpResponse("pong"),  # type: ignore[arg-type]
                      route_prefix="api", function_keys={}, master_key=None, auth=False)
    port = server.start("127.0.0.1", 0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/ping")
        assert conn.getresponse().read() == b"pong"  # the keep-alive connection stays open into stop()
        with caplog.at_level(logging.INFO, logger="uvicorn"):
            server.stop()
    finally:
        conn.close()
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")], caplog.text
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/api/ping")


def _spec(name: str, function: Any) -> FunctionSpec:
    return FunctionSpec(name=name, trigger={"type": "httpTrigger", "route": name, "authLevel": "ANONYMOUS",
                                            "name": "req"},
                        bindings=(), user_function=function, wants_context=False)


def test_async_functions_run_on_the_server_s_loop_and_sync_ones_on_its_threads(tmp_path: Path) -> None:
    """As the Python worker runs them: a sync function that blocks holds up no async one."""
    release = threading.Event()
    ran_on: dict[str, str] = {}

    def blocked(req: func.HttpRequest) -> func.HttpResponse:
        ran_on["sync"] = threading.current_thread().name
        release.wait(20)
        return func.HttpResponse("sync")

    async def quick(req: func.HttpRequest) -> func.HttpResponse:
        ran_on["async"] = threading.current_thread().name
        await asyncio.sleep(0)
        return func.HttpResponse(f"async {req.get_body().decode()}")

    server = HttpHost([_spec("blocked", blocked), _spec("quick", quick)], Invoker(tmp_path), route_prefix="api",
                      function_keys={}, master_key=None, auth=False)
    port = server.start("127.0.0.1", 0)
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(requests.get, f"http://127.0.0.1:{port}/api/blocked", timeout=30)
            deadline = time.monotonic() + 10
            while "sync" not in ran_on:
                assert time.monotonic() < deadline, "the sync function never started"
                time.sleep(0.005)
            fast = requests.post(f"http://127.0.0.1:{port}/api/quick", data=b"ok", timeout=10)
            assert (fast.status_code, fast.text) == (200, "async ok") and not slow.done()
            release.set()
            assert slow.result().text == "sync"
    finally:
        release.set()
        server.stop()
    assert ran_on["async"] == "devhost-http" and ran_on["sync"].startswith("devhost-http_")


def test_an_async_function_from_a_trigger_listener_s_thread_runs_to_completion(tmp_path: Path) -> None:
    async def shout(msg: str) -> str:
        await asyncio.sleep(0)
        return msg.upper()

    spec = FunctionSpec(name="shout", trigger={"type": "queueTrigger", "name": "msg"}, bindings=(),
                        user_function=shout, wants_context=False)
    assert spec.is_async and Invoker(tmp_path)(spec, "New queue message detected", "hi") == "HI"


def test_a_body_over_the_host_s_limit_is_refused_with_413_before_it_is_read() -> None:
    server = HttpHost([_spec("ping", lambda req: None)], lambda spec, reason, req: func.HttpResponse("pong"),  # type: ignore[arg-type]
                      route_prefix="api", function_keys={}, master_key=None, auth=False)
    port = server.start("127.0.0.1", 0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/api/ping")
        conn.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
        conn.endheaders()
        answer = conn.getresponse()
        assert (answer.status, str(MAX_REQUEST_BYTES) in answer.read().decode()) == (413, True)
    finally:
        conn.close()
        server.stop()
