"""shared.memory_tuning: the heap thresholds are applied on glibc and can be switched off."""
from __future__ import annotations

import subprocess
import sys

from shared.memory_tuning import keep_freed_memory


def test_it_can_be_switched_off() -> None:
    assert keep_freed_memory({"MLOPS_KEEP_FREED_MEMORY": "0"}) is False
    assert keep_freed_memory({"MLOPS_KEEP_FREED_MEMORY": "off"}) is False


def test_loading_the_app_applies_it_on_glibc() -> None:
    code = ("import platform, function_app; from shared.memory_tuning import keep_freed_memory; "
            "print(platform.libc_ver()[0], keep_freed_memory())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    libc, applied = done.stdout.split()
    assert applied == ("True" if libc == "glibc" else "False")
