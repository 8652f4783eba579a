"""What the health endpoints report: the public answer is one word, the details are for operators."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from shared.errors import PipelineError
from shared.settings import Need, get_settings

_PACKAGES = ("azure-functions", "azure-storage-blob", "onnxruntime", "numpy")


@dataclass(frozen=True)
class HealthReport:
    storage: Literal["ok", "unreachable", "not configured"]
    storage_endpoint: str | None = None
    storage_error: str | None = None
    # need -> messages naming each missing or invalid setting (a need left unused is normal: the
    # Azure DevOps webhook in a GitHub shop), so only storage decides the status
    configuration: dict[str, list[str]] = field(default_factory=dict)

    @property
    def status(self) -> Literal["ok", "degraded"]:
        return "ok" if self.storage == "ok" else "degraded"

    def problems(self) -> list[str]:
        found = [f"storage {self.storage}: {self.storage_error}"] if self.storage_error else []
        return found + [m for messages in self.configuration.values() for m in messages]

    def details(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "app_version": get_settings().app_version,
            "storage": {"status": self.storage, "endpoint": self.storage_endpoint, "error": self.storage_error},
            "configuration": self.configuration,
            "python": platform.python_version(),
            "packages": {name: _version(name) for name in _PACKAGES},
        }


def check_health() -> HealthReport:
    """Ping storage (when configured) and list configuration problems; never raises."""
    from shared.storage import get_storage

    settings = get_settings()
    problems = settings.startup_problems()
    configuration = {str(need): found for need, found in problems.items()}
    if Need.STORAGE in problems:
        return HealthReport("not configured", configuration=configuration)
    try:
        storage = get_storage()
    except PipelineError as exc:  # e.g. a malformed connection string
        return HealthReport("not configured", storage_error=exc.message, configuration=configuration)
    try:
        storage.ping()
    except PipelineError as exc:
        endpoint = _without_query(storage.blob_endpoint)
        return HealthReport("unreachable", endpoint, exc.internal or exc.message, configuration)
    return HealthReport("ok", _without_query(storage.blob_endpoint), configuration=configuration)


def _without_query(url: str | None) -> str | None:
    # a SAS connection string puts its token in the query
    return None if url is None else url.split("?", 1)[0]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
