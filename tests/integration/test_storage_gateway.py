"""AzureStorage only: how Azure SDK failures become our errors. The shared behaviour is in tests/contract.

Servers that answer 5xx / 429 or drop the connection are tiny local HTTP servers, not mocks: the real
SDK talks to them over a socket, so these tests see exactly what the gateway sees in production.
"""
from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.azurite import Azurite
from shared.errors import StorageUnreachable
from shared.settings import Settings
from shared.storage import AzureStorage, _raw_lister

SECRET = "TOPSECRETSIGNATURE"


def _connection_string(port: int, *, sas: bool = False) -> str:
    endpoints = (f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                 f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    if sas:  # a SAS token lives in the client's URL, so it could leak into error messages
        return endpoints + f"SharedAccessSignature=sv=2021-08-06&ss=bq&srt=sco&sp=rwdl&sig={SECRET}"
    return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;" + endpoints


def _gateway(port: int, *, sas: bool = False) -> AzureStorage:
    # no SDK retries: the same error comes out after retries, only slower (from_settings retries twice)
    conn = _connection_string(port, sas=sas)
    return AzureStorage(BlobServiceClient.from_connection_string(conn, retry_total=0),
                        QueueServiceClient.from_connection_string(conn, retry_total=0))


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A local HTTP server on a free port for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _answering(status: int) -> type[BaseHTTPRequestHandler]:
    # the error body Azure Storage sends (e.g. 503 ServerBusy), so the SDK parses it as it would in Azure
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>Simulated{status}</Code>'
            f"<Message>simulated status {status}</Message></Error>").encode()

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("x-ms-error-code", f"Simulated{status}")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return Answer


class Hangup(BaseHTTPRequestHandler):
    """Reads the request, then closes the connection without an answer."""

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _hang_up

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _refusing() -> Iterator[int]:
    """A port that refuses connections: bound, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


OPERATIONS: dict[str, Callable[[AzureStorage], object]] = {
    "read": lambda g: g.read("c", "p"),
    "write": lambda g: g.write("c", "p", b"x"),
    "list": lambda g: g.list("c"),
    "delete": lambda g: g.delete("c", "p"),
    "enqueue": lambda g: g.enqueue("q", {"a": 1}),
    "receive": lambda g: g.receive("q", max_messages=1, visibility_timeout=30),
    "ping": lambda g: g.ping(),
}


def test_unreachable_storage_names_the_endpoint_in_the_log_only() -> None:
    dead = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    gateway = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": dead}))
    with pytest.raises(StorageUnreachable) as info:
        gateway.ping()
    assert info.value.status == 503
    assert "start Azurite" in info.value.message and "127.0.0.1" not in info.value.message
    assert "endpoint=http://127.0.0.1:9/" in (info.value.internal or "")


@pytest.mark.parametrize("status", [500, 503, 429])
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_server_error_or_throttling_is_storage_unreachable_naming_the_endpoint(status: int, operation: str) -> None:
    with _serving(_answering(status)) as port:
        with pytest.raises(StorageUnreachable) as info:
            OPERATIONS[operation](_gateway(port))
        assert info.value.status == 503
        assert re.search(rf"endpoint=http://127.0.0.1:{port}/.* answered {status}", info.value.internal or "")
        assert "127.0.0.1" not in info.value.message


def test_a_dropped_connection_is_storage_unreachable_not_an_azure_error() -> None:
    with _serving(Hangup) as port:
        with pytest.raises(StorageUnreachable) as info:
            _gateway(port).read("c", "p")
        assert re.search(rf"endpoint=http://127.0.0.1:{port}/.*ServiceResponseError", info.value.internal or "")


def test_a_client_error_that_is_not_ours_to_translate_still_escapes() -> None:
    from azure.core.exceptions import HttpResponseError

    with _serving(_answering(403)) as port:
        with pytest.raises(HttpResponseError) as info:
            _gateway(port).read("c", "p")
        assert not isinstance(info.value, StorageUnreachable)
        assert info.value.status_code == 403


@pytest.mark.parametrize("server", ["refused", "503", "hangup"])
def test_unreachable_messages_never_contain_the_sas_token(server: str) -> None:
    servers = {"refused": _refusing, "503": lambda: _serving(_answering(503)), "hangup": lambda: _serving(Hangup)}
    with servers[server]() as port:
        gateway = _gateway(port, sas=True)
        assert SECRET in gateway.blob_endpoint  # the SDK keeps the token in the URL we report
        for operation in ("read", "ping", "enqueue"):
            with pytest.raises(StorageUnreachable) as info:
                OPERATIONS[operation](gateway)
            logged = info.value.internal or ""
            assert f"127.0.0.1:{port}" in logged, operation
            for text in (str(info.value), logged):
                assert SECRET not in text, operation
                assert "sig=" not in text, operation


def test_a_listing_longer_than_a_page_follows_the_continuation_marker(azurite: Azurite, unique: str) -> None:
    storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    container = f"paged-{unique}"
    etags = {f"v/{n:02d}": storage.write(container, f"v/{n:02d}", b"x" * n) for n in range(7)}
    storage.page_size = 3  # three List Blobs calls
    listed = storage.list(container, "v/")
    assert [(i.name, i.etag, i.size) for i in listed] == [(name, etag, int(name[2:])) for name, etag in etags.items()]


def test_listings_read_the_raw_answer_not_the_sdks_slow_models(azurite: Azurite) -> None:
    # a newer SDK without the names-only listing's internals falls back to list_blobs: still right, 6x the CPU
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("any")
    assert _raw_lister(client) is not None


@pytest.mark.parametrize("raw", [True, False], ids=["raw listing", "the SDK's models"])
def test_a_new_blob_whose_blocks_are_staged_is_listed_only_when_uploads_are_asked_for(
    azurite: Azurite, unique: str, raw: bool,
) -> None:
    storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    container = f"staged-{unique}"
    done = storage.write(container, "done.csv", b"a\n1\n")
    if not raw:
        storage._listers[container] = None  # an SDK without the raw listing: list_blobs
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(container, "up.csv")
    blob.stage_block("YmxvY2stMQ==", b"x" * 100)
    assert [(i.name, i.etag) for i in storage.list(container)] == [("done.csv", done)]
    listed = {i.name: i for i in storage.list(container, uncommitted=True)}
    assert sorted(listed) == ["done.csv", "up.csv"]
    assert listed["up.csv"].size == 0 and not storage.exists(container, "up.csv")  # no commit: nothing to read
    committed = str(blob.commit_block_list(["YmxvY2stMQ=="])["etag"])
    assert {(i.name, i.size, i.etag) for i in storage.list(container, uncommitted=True)} == {
        ("done.csv", 4, done), ("up.csv", 100, committed)}
