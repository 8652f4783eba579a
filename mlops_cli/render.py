"""Pure formatting for people: colours, aligned tables, relative times, durations, sizes, a progress bar."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Style:
    """ANSI colours when enabled (a terminal, and NO_COLOR unset); plain text otherwise."""

    enabled: bool = False

    @classmethod
    def for_stream(cls, stream: TextIO, env: Mapping[str, str] | None = None, *, no_color: bool = False) -> Style:
        """Colours only on a terminal and never with NO_COLOR set to anything non-empty (https://no-color.org)."""
        environ = os.environ if env is None else env
        isatty = getattr(stream, "isatty", lambda: False)
        return cls(enabled=bool(isatty()) and not environ.get("NO_COLOR") and not no_color)

    def paint(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        return f"\x1b[{';'.join(_CODES[s] for s in styles)}m{text}\x1b[0m"

    def status(self, status: str) -> str:
        """A status word in the colour of what it means."""
        return self.paint(status, *STATUS_STYLES.get(status, ()))


STATUS_STYLES: dict[str, tuple[str, ...]] = {
    "promoted": ("green", "bold"), "pending_approval": ("yellow", "bold"), "rejected": ("red",), "failed": ("red",),
    "superseded": ("dim",), "rolled_back": ("dim",), "duplicate": ("dim",), "waiting_for_data": ("yellow",),
    "training": ("cyan",), "trained": ("cyan",), "exported": ("cyan",), "received": ("cyan",), "queued": ("cyan",),
    "prepared": ("cyan",),
}


def visible_len(text: str) -> int:
    """Length on screen: colour codes take no room."""
    return len(_ANSI.sub("", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: Style = Style()) -> list[str]:
    """Left-aligned columns two spaces apart; cells may carry colour codes; trailing blanks trimmed."""
    widths = [visible_len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [cell + " " * (widths[i] - visible_len(cell)) for i, cell in enumerate(cells)]
        return "  ".join(padded).rstrip()

    return [style.paint(line(headers), "bold"), *(line(row) for row in rows)]


def parse_time(raw: object) -> datetime | None:
    """An ISO 8601 time from the API (with a zone), or None."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


_UNITS = ((86400, "day"), (3600, "h"), (60, "min"), (1, "s"))


def ago(when: datetime | None, now: datetime) -> str:
    """'just now', '42 s ago', '3 min ago', '5 h ago', '2 days ago'; 'in 3 min' for the future; a date past 30 days."""
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    if abs(seconds) < 10:
        return "just now"
    if abs(seconds) >= 30 * 86400:
        return when.date().isoformat()
    size, unit = next((s, u) for s, u in _UNITS if abs(seconds) >= s)
    count = int(abs(seconds) // size)
    label = f"{count} {unit}" + ("s" if unit == "day" and count != 1 else "")
    return f"{label} ago" if seconds > 0 else f"in {label}"


def duration(seconds: float | None) -> str:
    """'0.04 s', '12.3 s', '3 min 12 s', '2 h 05 min'."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(int(seconds) // 60, 60)
    return f"{hours} h {rest:02d} min"


def size(count: float) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '200.0 MiB', '3.21 GiB'."""
    if count < 1024:
        return f"{int(count)} B"
    for unit, scale in (("KiB", 1024.0), ("MiB", 1024.0**2), ("GiB", 1024.0**3)):
        if count < scale * 1024 or unit == "GiB":
            value = count / scale
            return f"{value:.2f} {unit}" if unit == "GiB" else f"{value:.1f} {unit}"
    return f"{count} B"  # pragma: no cover - the loop always returns


def progress_bar(done: int, total: int, elapsed: float, *, width: int = 30) -> str:
    """'[██████████▌         ]  35%  70.0 MiB/200.0 MiB  48.2 MiB/s  3 s left' (eighth-block resolution)."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    eighths = int(share * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part and full < width else "")
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 and done < total else None
    tail = f"  {duration(left)} left" if left is not None else ""
    return (f"[{filled.ljust(width)}] {share * 100:4.0f}%  {size(done)}/{size(total)}  "
            f"{size(rate)}/s{tail}")


def number(value: Any) -> str:
    """A metric for a table: 6 significant digits, integers as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def short(text: object, limit: int) -> str:
    """Text on one line, cut to limit characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def reason_mark(reason: str, style: Style) -> str:
    """A decision reason with a mark for how it went: ✓ passed, ✗ rejected, ! pending/breaking, · other."""
    lowered = reason.lower()
    if lowered.startswith("passed"):
        return f"{style.paint('✓', 'green')} {reason}"
    if lowered.startswith("rejected"):
        return f"{style.paint('✗', 'red')} {reason}"
    if lowered.startswith(("pending", "breaking")):
        return f"{style.paint('!', 'yellow')} {reason}"
    return f"{style.paint('·', 'dim')} {reason}"
