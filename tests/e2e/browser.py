"""A real headless Chromium for the page tests, driven by tests/e2e/browser_driver.mjs (playwright-core).

Chromium comes from Debian (`make test` installs it: its `chromium` target); a machine without it
fails the tests with that instruction instead of skipping them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import ROOT

DRIVER = Path(__file__).with_name("browser_driver.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTALL = "make chromium (Debian: apt-get install chromium), or CHROMIUM=<path of a Chrome>"


def require_browser() -> None:
    """Fail (never skip) with what to install when Chromium, node or playwright-core is missing."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"Chromium is not installed ({CHROMIUM} is missing): the model pages are tested in a real "
                    f"browser; install it with `{INSTALL}` (`make test` does this first)", pytrace=False)
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the browser test drives Chromium with playwright-core (npm)", pytrace=False)
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.fail("node_modules/playwright-core is missing: run `npm ci` (make setup does)", pytrace=False)


class Browser:
    """One Chromium page; each method is one driver command (raises AssertionError with its error)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(["node", str(DRIVER)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "CHROMIUM": CHROMIUM})
        self._next = 0
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._next += 1
            self._proc.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            stderr = self._proc.stderr.read() if self._proc.stderr else ""
            raise AssertionError(f"the browser driver stopped: {stderr[-2000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AssertionError(f"browser {op} {args}: {answer['error']}")
        return answer["value"]

    def goto(self, url: str) -> dict[str, Any]:
        return dict(self.call("goto", url=url))

    def click(self, selector: str) -> None:
        self.call("click", selector=selector)

    def fill(self, selector: str, value: str) -> None:
        self.call("fill", selector=selector, value=value)

    def text(self, selector: str) -> str:
        return str(self.call("text", selector=selector))

    def count(self, selector: str) -> int:
        return int(self.call("count", selector=selector))

    def attribute(self, selector: str, name: str) -> str | None:
        value = self.call("attribute", selector=selector, name=name)
        return None if value is None else str(value)

    def evaluate(self, expression: str) -> Any:
        return self.call("evaluate", expression=expression)

    def wait_for_text(self, selector: str, text: str) -> str:
        return str(self.call("wait_for_text", selector=selector, text=text))

    def wait_until(self, expression: str) -> None:
        """Poll a JavaScript expression in the page until it is truthy (the driver's timeout: 20 s)."""
        self.call("wait_until", expression=expression)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.call("screenshot", path=str(path))
        return path

    def url(self) -> str:
        return str(self.call("url"))

    def problems(self) -> list[str]:
        """Console errors, page errors and failed requests since the last call."""
        return list(self.call("problems"))

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps({"id": 0, "op": "close"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
