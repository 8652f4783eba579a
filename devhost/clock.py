"""The clock timers and polling back-off use: the app's (shared.clock), or a fake one tests advance."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

from shared.clock import Clock, SystemClock

__all__ = ["Clock", "FakeClock", "SystemClock"]


class FakeClock:
    """Time moves only when a test calls advance(); waits end when their deadline is reached."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._changed = threading.Condition()

    def now(self) -> datetime:
        with self._changed:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every waiter whose deadline has come."""
        with self._changed:
            self._now += timedelta(seconds=seconds)
            self._changed.notify_all()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._changed:
            deadline = self._now + timedelta(seconds=seconds)
            # a short real timeout so that setting `event` (which cannot notify us) is seen
            while self._now < deadline and not event.is_set():
                self._changed.wait(0.02)
        return event.is_set()
