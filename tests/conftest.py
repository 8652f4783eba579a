"""Session fixtures: a private Azurite on free ports and a storage gateway bound to it."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devhost.azurite import Azurite, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A private Azurite for the whole session; never a developer's running one."""
    location = tmp_path_factory.mktemp("azurite")
    instance = start_azurite(location, log_path=location / "azurite.log")
    print(f"\nAzurite started in {instance.started_seconds:.2f}s "
          f"(blob={instance.blob_port}, queue={instance.queue_port})")
    yield instance
    instance.stop()


@pytest.fixture
def storage(azurite: Azurite):  # type: ignore[no-untyped-def]
    """A gateway over the session's Azurite."""
    from shared.settings import Settings
    from shared.storage import AzureStorage

    return AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests sharing one Azurite never collide."""
    return uuid.uuid4().hex[:8]
