"""The one place that says what a model name, alias, version, run id, delivery id or free-text field may be.

Every HTTP route and every blob-triggered path passes what it got from outside through here
before it reaches a blob path, so nothing a caller sends can address a blob outside its folder.
Patterns use fullmatch: `$` would also accept a trailing newline.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from shared.errors import BadRequest, InvalidParameter

# Lowercase so blob paths, queue messages and URLs agree whatever the caller typed; `.` is left
# out so `.`/`..` can never be a path segment.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MODEL_NAME_RULE = "1-63 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"

Alias = Literal["champion", "previous"]
ALIASES: tuple[Alias, ...] = ("champion", "previous")

# Version blobs are named with six digits (paths.version_record).
MAX_VERSION = 999_999
_ASCII_DIGITS = re.compile(r"[0-9]{1,6}")

# A run id, or a provider's delivery id as it is (anything else is hashed before it names a blob).
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
_UNSAFE_CHARS = re.compile(r"[^a-z0-9_-]+")


def is_model_name(raw: str) -> bool:
    return MODEL_NAME.fullmatch(raw) is not None


def model_name(raw: str | None, *, what: str = "model name") -> str:
    """The name as given when it fits MODEL_NAME_RULE. Raises InvalidParameter."""
    if raw is None or not is_model_name(raw):
        raise InvalidParameter(f"{what} ({_show(raw)}) is not valid: use {MODEL_NAME_RULE}")
    return raw


def alias(raw: str | None) -> Alias:
    """champion or previous. Raises InvalidParameter."""
    for known in ALIASES:
        if raw == known:
            return known
    raise InvalidParameter(f"alias ({_show(raw)}) is not valid: use one of {', '.join(ALIASES)}")


def version(raw: str | int | None, *, what: str = "version") -> int:
    """A version number 1..MAX_VERSION from ASCII digits only (str.isdigit accepts '²' and '٣').

    Raises InvalidParameter.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, str) and _ASCII_DIGITS.fullmatch(raw):
        number = int(raw)
    else:
        number = 0
    if not 1 <= number <= MAX_VERSION:
        raise InvalidParameter(f"{what} ({_show(raw)}) is not valid: use a whole number from 1 to {MAX_VERSION}")
    return number


def run_id(raw: str | None) -> str:
    """A run id (the app hands out UUIDs): a plain token, safe as a blob name. Raises InvalidParameter."""
    if raw is None or not _TOKEN.fullmatch(raw):
        raise InvalidParameter(f"run id ({_show(raw)}) is not valid: use the run id the API returned")
    return raw


# A prediction id (ours: <request id>-<row>; or the client's own): printable, no separators that CSV,
# headers or blob paths would split on.
PREDICTION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PREDICTION_ID_RULE = "1-128 characters: letters, digits, '.', '_', ':' and '-'"


def prediction_id(raw: str | None, *, what: str = "prediction id") -> str:
    """A request or prediction id that fits PREDICTION_ID_RULE. Raises InvalidParameter."""
    if raw is None or not PREDICTION_ID.fullmatch(raw):
        raise InvalidParameter(f"{what} ({_show(raw)}) is not valid: use {PREDICTION_ID_RULE}")
    return raw


def delivery_key(raw: str | None) -> str | None:
    """A delivery id safe to put in a blob path: kept when plain, else its sha256 (it is unsigned input)."""
    if raw is None or not raw.strip():
        return None
    if _TOKEN.fullmatch(raw):
        return raw
    return "sha256-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def is_blob_file_name(raw: str) -> bool:
    """A dropped file's name under its model folder: no empty, '.' or '..' segment, no control character."""
    parts = raw.split("/")
    return (0 < len(raw) <= 900 and all(part not in ("", ".", "..") for part in parts)
            and not any(ord(c) < 32 or c == "\\" for c in raw))


def safe_segment(raw: str) -> str:
    """A readable, path-safe stand-in for an invalid name (for reports about it), never empty or dotted."""
    cleaned = _UNSAFE_CHARS.sub("-", raw.lower()).strip("-_")[:40]
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"invalid-{cleaned}-{digest}" if cleaned else f"invalid-{digest}"


def text_field(body: Mapping[str, Any], name: str, *, default: str, max_chars: int = 500) -> str:
    """An optional free-text field of a JSON body (who, why): a string of bounded length. Raises BadRequest."""
    value = body.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise BadRequest(f"field {name!r} has {len(value)} characters; the limit is {max_chars}")
    return value


def _show(raw: object) -> str:
    """The offending value for a message: repr'd (control characters visible) and cut short."""
    text = repr(raw)
    return f"got {text if len(text) <= 80 else text[:77] + '...'}"
