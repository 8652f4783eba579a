"""Follow a run live: poll its record with a short interval and a deadline, redraw its stages on a terminal.

Ctrl-C stops the watching, never the run: the pipeline goes on in the app.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlops_cli.console import Context
from mlops_cli.errors import FAILED, INTERRUPTED, CliError
from mlops_cli.progress import exit_code, final_status, outcome_lines, step_lines, steps

INTERVAL = 0.5


def _same_etag(a: object, b: object) -> bool:
    return str(a or "").strip('"') == str(b or "").strip('"') != ""


class Follower:
    """Polls one model's runs; `clock` and `sleep` are injectable so tests need not wait."""

    def __init__(self, ctx: Context, model: str, *, timeout: float, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ctx, self.model, self.timeout, self.interval = ctx, model, timeout, interval
        self._clock, self._sleep = clock, sleep
        self._deadline = clock() + timeout
        self._drawn = 0  # lines of the live block on the terminal
        self._printed: set[str] = set()  # stages already printed (not a terminal: one line each)
        self._frame = 0

    def find_drop(self, blob: str, etag: str) -> dict[str, Any]:
        """The run a drop started (matched by blob and ETag), once the pipeline has picked it up."""
        if self.ctx.console.live and not self.ctx.console.as_json:
            self.ctx.console.err(f"waiting for the pipeline to pick up {blob}…")
        while True:
            for run in self._guarded(lambda: self.ctx.api.get("registry", "models", self.model, "runs"))["runs"]:
                if run.get("source_blob") == blob and _same_etag(run.get("source_etag"), etag):
                    return dict(run)
            self._wait(f"no run for {blob} yet", f"mlops runs {self.model}")

    def follow(self, run_id: str) -> dict[str, Any]:
        """Poll the run until it settles; returns its last record. Raises CliError on the deadline, Ctrl-C."""
        changed_at, last_seen = self._clock(), -1
        while True:
            run = self._guarded(lambda: self.ctx.api.get("registry", "models", self.model, "runs", run_id), run_id)
            if len(run.get("timeline") or []) != last_seen:
                changed_at, last_seen = self._clock(), len(run.get("timeline") or [])
            self._show(run, self._clock() - changed_at)
            if final_status(run) is not None:
                return dict(run)
            self._wait(f"run {run_id} is still {run.get('status')}",
                       f"mlops run {self.model} {run_id} --wait", run_id)

    def version_of(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """The version the run made (for its decision), if any."""
        if not run.get("version"):
            return None
        return dict(self.ctx.api.get("registry", "models", self.model, "versions", run["version"]))

    def finish(self, run: dict[str, Any], result: dict[str, Any] | None = None) -> int:
        """Print the decision and its reasons under the stages (or, with --json, result + run + version);
        the exit code the run's outcome means."""
        version = self.version_of(run)
        if self.ctx.console.as_json:
            self.ctx.console.json({**(result or {}), "run": run, "version": version})
        else:
            self.ctx.console.lines(outcome_lines(run, version, self.ctx.console.style))
        return exit_code(run)

    def watch(self, run_id: str, result: dict[str, Any] | None = None) -> int:
        """Follow a run live to its decision; the exit code its outcome means."""
        if not self.ctx.console.as_json:
            self.ctx.console.err(f"run {run_id} of {self.model} (Ctrl-C stops watching, not the run)")
        return self.finish(self.follow(run_id), result)

    def _show(self, run: dict[str, Any], active: float) -> None:
        console = self.ctx.console
        if console.as_json:
            return
        found = steps(run, active_seconds=active)
        if console.live:
            self._frame += 1
            lines = step_lines(found, console.err_style, frame=self._frame)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            console.stderr.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            console.stderr.flush()
            self._drawn = len(lines)
            return
        for step, line in zip(found, step_lines(found, console.err_style), strict=True):
            if step.state in ("done", "failed") and step.name not in self._printed:
                self._printed.add(step.name)
                console.err(line)

    def _wait(self, still: str, follow_with: str, run_id: str | None = None) -> None:
        if self._clock() >= self._deadline:
            raise CliError(f"{still} after {self.timeout:g} s (--timeout); it continues in the app: follow it "
                           f"with `{follow_with}`", FAILED)
        self._guarded(lambda: self._sleep(self.interval), run_id)

    def _guarded(self, call: Callable[[], Any], run_id: str | None = None) -> Any:
        try:
            return call()
        except KeyboardInterrupt:
            follow_with = (f"mlops run {self.model} {run_id} --wait" if run_id else f"mlops runs {self.model}")
            raise CliError(f"stopped watching; the run continues in the app: follow it with `{follow_with}`",
                           INTERRUPTED) from None
