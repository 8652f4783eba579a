"""Wall-clock helpers: one place that formats timestamps."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds."""
    return utc_now().isoformat(timespec="milliseconds")
