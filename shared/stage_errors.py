"""Record a failed attempt on the run's timeline, then let the host retry (or poison) it."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from shared import runs
from shared.errors import InProgress
from shared.storage import AzureStorage

log = logging.getLogger("mlops.stage")


@contextmanager
def recorded_failures(storage: AzureStorage, model: str, run_id: str, stage: str, attempt: int) -> Iterator[None]:
    """On an exception, note `attempt N of <stage> failed: <error>` on the run and re-raise."""
    try:
        yield
    except InProgress as exc:
        log.info("%s: %s", stage, exc.message)
        raise
    except Exception as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        try:
            runs.record(storage, model, run_id, "retrying", error=f"{stage} attempt {attempt} failed: {message}")
        except Exception:  # never hide the original error behind a bookkeeping one
            log.exception("%s: could not record the failure of run %s", stage, run_id)
        raise
