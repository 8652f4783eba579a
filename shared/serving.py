"""Process-wide scoring state: the session cache over the registry and the prediction logger.

Lean on purpose (no sklearn, no pandas): this is what the scoring function imports.
"""
from __future__ import annotations

import atexit
import threading
from typing import Any

from shared import paths, registry
from shared.errors import NotFound, PipelineError
from shared.prediction_log import SEGMENT_SUFFIX, PredictionLogger
from shared.scoring import Encoded, ModelCache, Scored, score, target
from shared.settings import Settings
from shared.storage import AzureStorage

# Bodies up to this size are scored on an async caller's event loop when the model is in memory: ~100 rows of 30
# numbers, well under a millisecond of work. Bigger ones (10,000 rows: ~10 ms) go to a thread, so one batch call
# does not hold up the single-row calls behind it.
INLINE_MAX_BYTES = 16 * 1024


class Scorer:
    """Scores requests against cached ONNX sessions and logs predictions in batches."""

    def __init__(self, storage: AzureStorage, settings: Settings) -> None:
        self._storage = storage
        self._settings = settings
        self.cache = ModelCache(self._resolve, self._fetch, settings.scoring_recheck_seconds)
        self.logger = PredictionLogger(
            self._write_log,
            flush_rows=settings.prediction_log_flush_rows, flush_seconds=settings.prediction_log_flush_seconds,
            sample_rate=settings.prediction_log_sample_rate,
        )

    def _write_log(self, path: str, data: bytes) -> None:
        media = "application/x-parquet" if path.endswith(SEGMENT_SUFFIX) else "application/x-ndjson"
        self._storage.write(paths.PREDICTIONS, path, data, content_type=media)

    def _resolve(self, model: str, alias: str) -> tuple[int, str]:
        return registry.resolve_alias(self._storage, model, alias)

    def _fetch(self, model: str, version: int) -> tuple[bytes, str]:
        record = registry.get_version(self._storage, model, version)
        onnx = record.artifacts.get("onnx")
        if onnx is None:
            raise NotFound(f"model version (name={model}, version={version}) has no ONNX artifact "
                           f"(status={record.status})")
        return self._storage.read(paths.MLOPS, onnx.path).data, onnx.sha256

    def score(
        self, model: str | None, body: bytes, content_type: str | None, *, alias: str | None = None,
        version: str | int | None = None, request_id: str | None = None, prediction_ids: str | None = None,
        accept: str | None = None,
    ) -> tuple[int, dict[str, Any] | Encoded, dict[str, str]]:
        """(status, JSON body or an Encoded CSV/Arrow answer, headers) for one scoring request; never raises for
        bad input.

        model, alias, version and the x-request-id / x-prediction-ids / accept headers are passed as the
        request gave them: scoring.score checks them.
        """
        return score(
            self.cache, model, body, content_type, alias=alias, version=version, request_id=request_id,
            prediction_ids=prediction_ids, max_bytes=self._settings.scoring_max_body_bytes, observe=self._log,
            accept=accept,
        )

    def answers_at_once(self, model: str | None, body_bytes: int, *, alias: str | None = None,
                        version: str | int | None = None) -> bool:
        """score() would answer this request without waiting on storage and within about a millisecond: the model
        is in memory and the body is small (or the name or pin is refused before anything is read). An async
        caller runs such a request on its event loop and anything else on a thread."""
        if body_bytes > INLINE_MAX_BYTES:
            return False
        try:
            name, pin_alias, pin_version = target(model, alias, version)
        except PipelineError:
            return True  # a 400 naming the rule, before storage
        return self.cache.is_warm(name, pin_alias, pin_version)

    def _log(self, scored: Scored) -> None:
        model = scored.model
        self.logger.log(model.name, model.version, scored.request_id, scored.inputs, scored.result,
                        scored.prediction_ids)

    def close(self) -> None:
        """Flush the prediction log (also runs at interpreter exit)."""
        self.logger.close()


_scorer: Scorer | None = None
_lock = threading.Lock()


def get_scorer() -> Scorer:
    """The process-wide scorer (created on first use; flushed at exit)."""
    global _scorer
    with _lock:
        if _scorer is None:
            from shared.settings import Need, get_settings
            from shared.storage import get_storage

            settings = get_settings()
            settings.require(Need.SCORING)  # 503 naming a bad MLOPS_SCORING_*/PREDICTION_LOG_* setting
            _scorer = Scorer(get_storage(), settings)
            atexit.register(_scorer.close)
        return _scorer
