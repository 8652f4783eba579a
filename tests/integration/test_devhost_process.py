"""`python -m devhost` as a process: clear startup errors, SIGTERM with running invocations, --with-azurite."""
from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite, connection_string, free_port, listening
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import SEMANTICS_APP, HostProcess, fixture_env, records, wait_for


@pytest.fixture
def processes() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for p in started:
        p.kill()


def run_host(processes: list[HostProcess], env: dict[str, str], *args: str, app: Path = SEMANTICS_APP) -> HostProcess:
    p = HostProcess(["--app-dir", str(app), "--port", "0", "--blob-scan-interval", "0.2", *args], env)
    processes.append(p)
    return p


def test_sigterm_releases_a_message_whose_invocation_outlives_the_grace_period(
    azurite: Azurite, storage: AzureStorage, unique: str, processes: list[HostProcess],
) -> None:
    env = fixture_env(azurite, unique)
    host = run_host(processes, env, "--grace", "1")
    host.wait_output("Host started")
    sent = storage.enqueue(env["SLOW_QUEUE"], {"seconds": 60})
    wait_for(lambda: records(storage, env, "slow-started"), "the slow invocation to start")
    stopping = time.monotonic()
    host.proc.send_signal(signal.SIGTERM)
    assert host.finish() == 0, host.output
    assert time.monotonic() - stopping < 8  # grace 1 s, not the message's 10 min lease
    assert "Released message" in host.output and "Host stopped" in host.output
    [msg] = storage.receive(env["SLOW_QUEUE"], max_messages=1, visibility_timeout=30)  # visible at once
    assert (msg.id, msg.dequeue_count) == (sent, 2)  # once by the stopped host, once by us
    assert records(storage, env, "slow-finished") == []


def test_sigterm_waits_for_an_invocation_that_finishes_within_the_grace_period(
    azurite: Azurite, storage: AzureStorage, unique: str, processes: list[HostProcess],
) -> None:
    env = fixture_env(azurite, unique)
    host = run_host(processes, env, "--grace", "15")
    host.wait_output("Host started")
    storage.enqueue(env["SLOW_QUEUE"], {"seconds": 1})
    wait_for(lambda: records(storage, env, "slow-started"), "the slow invocation to start")
    host.proc.send_signal(signal.SIGTERM)
    assert host.finish() == 0, host.output
    assert len(records(storage, env, "slow-finished")) == 1
    assert storage.peek(env["SLOW_QUEUE"]) == []  # completed and deleted, not released
    assert "Executed 'Functions.slow' (Succeeded" in host.output


def test_unreachable_azurite_is_a_clear_error_naming_the_endpoint(unique: str, processes: list[HostProcess]) -> None:
    blob_port = free_port()
    env = {"FIXTURE_RECORDS": f"rec-{unique}", "FLAKY_QUEUE": "q1", "SLOW_QUEUE": "q2",
           "BLOB_CONTAINER": "c1x", "EG_CONTAINER": "c2x",
           "AzureWebJobsStorage": connection_string(blob_port, free_port())}
    host = run_host(processes, env)
    assert host.finish() == 1
    assert f"storage is unreachable (setting=AzureWebJobsStorage, endpoint=http://127.0.0.1:{blob_port}/" in host.output
    assert "npx azurite --location .azurite" in host.output and "make run" in host.output
    assert "Traceback" not in host.output


def test_import_failure_is_a_clear_error_naming_the_module(processes: list[HostProcess]) -> None:
    host = run_host(processes, {}, app=SEMANTICS_APP.parent / "broken_app")
    assert host.finish() == 1
    assert "function_app.py failed to import (module=function_app" in host.output
    broken = (SEMANTICS_APP.parent / "broken_app" / "function_app.py").read_text().splitlines()
    line = next(i for i, text in enumerate(broken, 1) if "module_that_does_not_exist" in text)
    assert "No module named 'module_that_does_not_exist'" in host.output and f"function_app.py:{line}" in host.output
    assert "Traceback" not in host.output


def test_with_azurite_starts_azurite_for_the_app_and_stops_it_on_exit(
    tmp_path: Path, unique: str, processes: list[HostProcess],
) -> None:
    app = tmp_path / "app"
    shutil.copytree(SEMANTICS_APP, app)
    blob_port, queue_port = free_port(), free_port()
    env = {"FIXTURE_RECORDS": f"rec-{unique}", "FLAKY_QUEUE": "q1", "SLOW_QUEUE": "q2",
           "BLOB_CONTAINER": "c1x", "EG_CONTAINER": "c2x"}
    host = run_host(processes, env, "--with-azurite", "--azurite-blob-port", str(blob_port),
                    "--azurite-queue-port", str(queue_port), "--no-auth", app=app)
    host.wait_output("Host started", timeout=60)
    assert listening(blob_port) and (app / ".azurite").is_dir()
    assert "HTTP auth: OFF (--no-auth)" in host.output
    host.proc.send_signal(signal.SIGINT)
    assert host.finish() == 0, host.output
    assert "Azurite stopped" in host.output and not listening(blob_port)
