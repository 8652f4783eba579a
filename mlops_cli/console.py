"""Where output goes: results on stdout (a table, or JSON with --json), notes and progress on stderr."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from mlops_cli.api import Api
from mlops_cli.render import Style


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Console:
    """The two streams, their styles, and whether stderr may be redrawn in place (a terminal)."""

    stdout: TextIO
    stderr: TextIO
    as_json: bool = False
    style: Style = Style()
    err_style: Style = Style()
    live: bool = False
    now: Callable[[], datetime] = _utc_now

    @classmethod
    def create(cls, *, as_json: bool, no_color: bool, env: Mapping[str, str] | None = None,
               stdout: TextIO | None = None, stderr: TextIO | None = None) -> Console:
        out, err = stdout or sys.stdout, stderr or sys.stderr
        err_style = Style.for_stream(err, env, no_color=no_color)
        return cls(out, err, as_json, Style.for_stream(out, env, no_color=no_color), err_style,
                   live=bool(getattr(err, "isatty", lambda: False)()))

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def lines(self, lines: list[str]) -> None:
        for line in lines:
            self.out(line)

    def err(self, text: str = "") -> None:
        print(text, file=self.stderr, flush=True)

    def json(self, body: Any) -> None:
        self.out(json.dumps(body, indent=2, default=str, ensure_ascii=False))


@dataclass
class Context:
    """What a command gets: the API of its target and the console."""

    api: Api
    console: Console
    options: dict[str, Any] = field(default_factory=dict)

    def announce(self) -> None:
        """Say which target a change goes to (stderr), before making it."""
        self.console.err(self.console.err_style.paint(f"→ {self.api.target.label()}", "dim"))
