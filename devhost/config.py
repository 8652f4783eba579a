"""Startup configuration: host.json options, local.settings.json (Values, port, keys), binding expressions."""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost")

DEFAULT_PORT = 7071
HOSTS_CONTAINER = "azure-webjobs-hosts"  # where the Functions host keeps receipts and timer status


class DevHostError(Exception):
    """A problem the developer must fix before the host can run; printed without a traceback."""


def parse_timespan(value: str | int | float, what: str) -> float:
    """Seconds in a .NET TimeSpan string ("00:00:10", "1.02:00:00", "00:00:00.250")."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", value.strip())
    if not m:
        raise DevHostError(f"host.json {what}={value!r} is not a TimeSpan like 00:00:10")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _get(section: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Case-insensitive lookup: the Functions host binds host.json keys case-insensitively."""
    for k, v in section.items():
        if k.lower() == key.lower():
            return v
    return default


@dataclass(frozen=True)
class QueueOptions:
    """host.json extensions.queues with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"


def default_blobs_parallelism() -> int:
    """The blobs extension's default maxDegreeOfParallelism: 8 * the number of cores (BlobsOptions.cs)."""
    return 8 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class HostConfig:
    """What the local host reads from host.json."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    poison_blob_threshold: int = 5
    # extensions.blobs.maxDegreeOfParallelism: blob versions processed at once
    blobs_max_parallel: int = field(default_factory=default_blobs_parallelism)


def _blobs_parallelism(blobs: Mapping[str, Any]) -> int:
    value = _get(blobs, "maxDegreeOfParallelism")
    if value is None:
        return default_blobs_parallelism()
    try:
        parallel = int(value)
    except (TypeError, ValueError):
        parallel = 0
    if parallel <= 0:  # BlobsOptions rejects it too (ArgumentOutOfRangeException)
        raise DevHostError(f"host.json extensions.blobs.maxDegreeOfParallelism={value!r}: use a positive integer")
    return parallel


def load_host_json(app_dir: Path) -> HostConfig:
    """Read host.json (missing file -> defaults). Raises DevHostError on invalid JSON or values."""
    path = app_dir / "host.json"
    if not path.exists():
        log.warning("no host.json in %s: using the host's defaults", app_dir)
        return HostConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DevHostError(f"host.json (path={path}) is not valid JSON: {exc}") from exc
    ext = _get(data, "extensions", {}) or {}
    http, queues, blobs = (_get(ext, k, {}) or {} for k in ("http", "queues", "blobs"))
    batch = int(_get(queues, "batchSize", 16))
    encoding = str(_get(queues, "messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise DevHostError(f"host.json extensions.queues.messageEncoding={encoding!r}: use base64 or none")
    return HostConfig(
        route_prefix=str(_get(http, "routePrefix", "api")).strip("/"),
        queues=QueueOptions(
            batch_size=batch,
            # the Functions host defaults newBatchThreshold to batchSize/2
            new_batch_threshold=int(_get(queues, "newBatchThreshold", batch // 2)),
            max_dequeue_count=int(_get(queues, "maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(_get(queues, "visibilityTimeout", 0), "visibilityTimeout"),
            max_polling_interval=parse_timespan(_get(queues, "maxPollingInterval", 60), "maxPollingInterval"),
            message_encoding=encoding,
        ),
        poison_blob_threshold=int(_get(blobs, "poisonBlobThreshold", 5)),
        blobs_max_parallel=_blobs_parallelism(blobs),
    )


@dataclass(frozen=True)
class LocalSettings:
    """local.settings.json: app settings, the HTTP port and (DevHost section) the keys."""

    path: Path | None
    values: dict[str, str]
    port: int | None = None
    function_keys: dict[str, str] = field(default_factory=dict, repr=False)
    master_key: str | None = field(default=None, repr=False)
    # host-level system keys by name, e.g. blobs_extension for the blobs extension's Event Grid webhook
    system_keys: dict[str, str] = field(default_factory=dict, repr=False)


def load_local_settings(app_dir: Path, path: Path | None = None) -> LocalSettings:
    """Read local.settings.json, falling back to local.settings.sample.json with a warning."""
    if path is None:
        path = app_dir / "local.settings.json"
        if not path.exists():
            sample = app_dir / "local.settings.sample.json"
            if not sample.exists():
                log.warning("no local.settings.json in %s: only the process environment is used", app_dir)
                return LocalSettings(None, {})
            log.warning("no local.settings.json in %s: using %s (copy it to local.settings.json to "
                        "keep your own settings)", app_dir, sample.name)
            path = sample
    elif not path.exists():
        raise DevHostError(f"settings file (path={path}) does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DevHostError(f"settings file (path={path}) is not valid JSON: {exc}") from exc
    if data.get("IsEncrypted"):
        raise DevHostError(f"settings file (path={path}) is encrypted: run `func settings decrypt` first")
    dev = data.get("DevHost") or {}
    port = (data.get("Host") or {}).get("LocalHttpPort")
    return LocalSettings(
        path=path,
        values={k: "" if v is None else str(v) for k, v in (data.get("Values") or {}).items()},
        port=int(port) if port else None,
        function_keys={k: str(v) for k, v in (dev.get("FunctionKeys") or {}).items() if v},
        master_key=dev.get("MasterKey") or None,
        system_keys={k: str(v) for k, v in (dev.get("SystemKeys") or {}).items() if v},
    )


def apply_values(values: Mapping[str, str]) -> None:
    """Put settings into the environment; a variable already set in the shell wins."""
    for name, value in values.items():
        if name in os.environ:
            # func start does this too: "Skipping 'X' from local settings as it's already defined
            # in current environment variables."
            log.info("Skipping '%s' from local settings as it's already defined in current "
                     "environment variables.", name)
            continue
        os.environ[name] = value


def resolve(value: str, where: str) -> str:
    """Resolve %Setting% binding expressions from app settings, as the Functions host does."""
    def setting(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise DevHostError(f"{where}: app setting {name} (used as %{name}%) is not set")
        return os.environ[name]

    return re.sub(r"%([^%/{}]+)%", setting, value)
