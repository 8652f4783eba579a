"""Keep freed memory in the process's heap instead of handing it back to the kernel after every request.

A 10,000-row request allocates and frees a few MB of numpy and bytes buffers. glibc serves blocks that
big with mmap and unmaps them on free, and raises its threshold only to the size just freed, so the same
request the next time maps fresh pages again: every page is faulted in and zeroed by the kernel. Fixing
the thresholds keeps those blocks in the heap for the next request. Measured by bench/bench_scoring.py
(README, "Scoring speed"): a 10,000-row JSON body scores in ~20 ms instead of ~30.

The cost is memory the heap keeps after a burst, at most TRIM_THRESHOLD above what is in use.
MLOPS_KEEP_FREED_MEMORY=0 turns it off; outside glibc (musl, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 128 << 20  # free memory at the heap's top kept for reuse before it is returned


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Apply the thresholds once per process (function_app and devhost call it at start-up); True if applied."""
    setting = (os.environ if environ is None else environ).get("MLOPS_KEEP_FREED_MEMORY", "1").strip().lower()
    if setting in ("0", "false", "no", "off") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not applied:
        log.warning("mallopt refused the heap thresholds; big requests map fresh pages each time")
    return applied
