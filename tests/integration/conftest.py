"""Fixtures shared by the local host's integration tests: per-test settings and DevHosts on the fixture app."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devhost import DevHost
from devhost.azurite import Azurite
from tests.fixtures.devhost_support import SEMANTICS_APP, Start, fixture_env


@pytest.fixture
def env(azurite: Azurite, unique: str) -> dict[str, str]:
    return fixture_env(azurite, unique)


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Start]:
    """Start DevHosts on the fixture app (fast blob scans); all are stopped at the end."""
    hosts: list[DevHost] = []

    def _start(**kwargs: Any) -> DevHost:
        kwargs.setdefault("blob_scan_interval", 0.1)
        host = DevHost(SEMANTICS_APP, env={**env, **kwargs.pop("env", {})}, port=0, **kwargs).start()
        hosts.append(host)
        return host

    yield _start
    for host in reversed(hosts):
        host.stop(grace_seconds=2)
