"""Session fixtures: a private Azurite on free ports and a storage gateway bound to it."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from devhost.azurite import Azurite, start_azurite

# ci: the same examples on every run (a red CI must be reproducible); soak: new random ones each run.
# Fuzz tests set their own bounded max_examples; the stateful lifecycle test takes the profile's.
settings.register_profile("ci", max_examples=int(os.environ.get("MLOPS_STATEFUL_EXAMPLES", "200")),
                          stateful_step_count=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("soak", max_examples=3000, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
