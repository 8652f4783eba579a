"""The name rules of shared/names.py, checked before a request leaves (a bad name is a usage error, exit 2).

The API is the authority and checks them again; tests/unit/test_cli_names.py holds these copies to it.
The CLI does not import the app's modules, so the installed `mlops` works without the repository.
"""
from __future__ import annotations

import argparse
import re

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MODEL_NAME_RULE = "1-63 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
MAX_VERSION = 999_999
_VERSION = re.compile(r"[0-9]{1,6}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")


def _shown(raw: str) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def model_name(raw: str) -> str:
    """argparse type: a model name. Raises ArgumentTypeError naming the rule."""
    if not MODEL_NAME.fullmatch(raw):
        raise argparse.ArgumentTypeError(f"model name ({_shown(raw)}) is not valid: use {MODEL_NAME_RULE}")
    return raw


def version(raw: str) -> int:
    """argparse type: a version number 1..999999 in ASCII digits ('²' and '٣' pass str.isdigit, not this)."""
    number = int(raw) if _VERSION.fullmatch(raw) else 0
    if not 1 <= number <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"version ({_shown(raw)}) is not valid: use a whole number from 1 to "
                                         f"{MAX_VERSION}")
    return number


def run_id(raw: str) -> str:
    """argparse type: a run id as the API hands them out."""
    if not _RUN_ID.fullmatch(raw):
        raise argparse.ArgumentTypeError(f"run id ({_shown(raw)}) is not valid: use the run id the API returned")
    return raw


def is_blob_file_name(raw: str) -> bool:
    """A dropped file's name under its model folder: no empty, '.' or '..' segment, no control character."""
    parts = raw.split("/")
    return (0 < len(raw) <= 900 and all(part not in ("", ".", "..") for part in parts)
            and not any(ord(c) < 32 or c == "\\" for c in raw))


def file_name(raw: str) -> str:
    """argparse type: the name a drop gets under datasets/<model>/."""
    if not is_blob_file_name(raw):
        raise argparse.ArgumentTypeError(f"file name ({_shown(raw)}) is not allowed: no empty, '.' or '..' "
                                         "segments, backslashes or control characters")
    return raw
