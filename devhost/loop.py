"""The background loop every trigger listener runs on."""
from __future__ import annotations

import threading


class PollingLoop:
    """A daemon thread running `_run` until `_stop` is set; subclasses call `_init_loop` first."""

    _stop: threading.Event
    _thread: threading.Thread

    def _init_loop(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop_polling(self) -> None:
        """Stop the loop and wait for it to notice (invocations it started keep running)."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)
