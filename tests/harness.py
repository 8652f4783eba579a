"""The app's queue functions over the in-memory storage fake, delivered the way the Functions host does.

One message at a time: delete on success, visible again after visibilityTimeout on failure,
moved to `<queue>-poison` on the 5th failure (then the poison function runs), and a worker
that dies (Crash, a BaseException like kill -9) leaves its message invisible for the host's
10-minute lease. Time is a ManualClock the tests move. The learner is the real one, with its
results cached by input content so model-based tests can replay the same data and specs cheaply.
"""
from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
import yaml

from shared import paths, registry
from shared.clock import ManualClock
from shared.learner import Learner
from shared.lifecycle.releases import give_up
from shared.lifecycle.stages import Context
from shared.lifecycle.sweeper import sweep
from shared.memory_storage import MemoryStorage
from shared.outbox import Outbox
from shared.pipeline import STAGES, deliver, prepare_drop, retrain
from shared.settings import Settings
from shared.spec import spec_hash
from shared.storage import QueuedMessage, encode_message

HOST_LEASE_SECONDS = 600
VISIBILITY_TIMEOUT = 2
MAX_DEQUEUE = 5
PIPELINE_QUEUES = (paths.RETRAIN_QUEUE, paths.TRAIN_QUEUE, paths.EXPORT_QUEUE, paths.VALIDATE_QUEUE)
POISON_QUEUES = tuple(paths.poison(q) for q in (*STAGES, paths.RETRAIN_QUEUE))


class Crash(BaseException):
    """The worker process died here (kill -9): nothing after this line runs, no except clause sees it."""


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(part, index=False).values.tobytes())
            h.update(",".join(map(str, part.columns)).encode())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


class CachedLearner(Learner):
    """The real learner; identical inputs (by content) give the cached result of the first call."""

    cache: dict[str, Any] = {}  # shared by every instance: hypothesis replays the same inputs

    def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def fit(self, frame: Any, spec: Any, extra: Any) -> Any:
        return self._cached(_digest("fit", frame, spec_hash(spec), extra), lambda: super(CachedLearner, self).fit(
            frame, spec, extra))

    def load_pipeline(self, data: bytes) -> Any:
        pipeline = super().load_pipeline(data)
        pipeline.mlops_sha = hashlib.sha256(data).hexdigest()
        return pipeline

    def export(self, pipeline: Any, spec: Any, holdout: Any) -> bytes:
        return self._cached(_digest("export", pipeline.mlops_sha), lambda: super(CachedLearner, self).export(
            pipeline, spec, holdout))

    def parity(self, pipeline: Any, onnx_bytes: bytes, holdout: Any, spec: Any, settings: Any) -> Any:
        return self._cached(_digest("parity", pipeline.mlops_sha, onnx_bytes), lambda: super(
            CachedLearner, self).parity(pipeline, onnx_bytes, holdout, spec, settings))

    def evaluate(self, onnx_bytes: bytes, frame: Any, spec: Any, classes: Any) -> Any:
        return self._cached(_digest("evaluate", onnx_bytes, frame, spec_hash(spec)), lambda: super(
            CachedLearner, self).evaluate(onnx_bytes, frame, spec, classes))

    def output_profile(self, onnx_bytes: bytes, frame: Any, spec: Any, classes: Any) -> Any:
        return self._cached(_digest("outputs", onnx_bytes, frame, spec_hash(spec)), lambda: super(
            CachedLearner, self).output_profile(onnx_bytes, frame, spec, classes))

    def holdout_charts(self, onnx_bytes: bytes, frame: Any, spec: Any, classes: Any) -> Any:
        return self._cached(_digest("charts", onnx_bytes, frame, spec_hash(spec)), lambda: super(
            CachedLearner, self).holdout_charts(onnx_bytes, frame, spec, classes))

    def latency(self, onnx_bytes: bytes, frame: Any, spec: Any) -> Any:
        return self._cached(_digest("latency", onnx_bytes), lambda: super(CachedLearner, self).latency(
            onnx_bytes, frame, spec))

    def library_versions(self) -> dict[str, str]:
        return self._cached("libraries", super().library_versions)


class LocalPipeline:
    """Drops, queue deliveries, poison handling and sweeps over a MemoryStorage and a ManualClock."""

    def __init__(self, *, learner: Learner | None = None, lease_seconds: float = 60.0) -> None:
        self.clock = ManualClock()
        self.storage = MemoryStorage(clock=self.clock.now)
        self.ctx = Context(self.storage, Settings.from_env({}), self.clock, learner or CachedLearner(),
                           lease_seconds=lease_seconds, heartbeat_seconds=0)
        self.log: list[tuple[str, Any]] = []
        self.unreceipted: set[tuple[str, str]] = set()  # blob versions whose trigger has not succeeded yet

    # -- what users do --------------------------------------------------------------------------

    def upload(self, spec: dict[str, Any]) -> str:
        return registry.upload_spec(self.storage, yaml.safe_dump(spec).encode(), "spec.yaml")[1]

    def put_drop(self, model: str, name: str, frame: pd.DataFrame) -> str:
        """Write a dataset blob (the trigger fires on the next `fire_drop`); returns its ETag."""
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        etag = self.storage.write(paths.DATASETS, f"{model}/{name}", buf.getvalue().encode())
        self.unreceipted.add((model, name))
        return etag

    def fire_drop(self, model: str, name: str) -> dict[str, Any]:
        """The blob trigger firing for the current version of a dropped file."""
        blob = self.storage.read(paths.DATASETS, f"{model}/{name}")
        ctx, outbox = self.ctx.fresh().with_outbox()
        result = prepare_drop(ctx, f"{model}/{name}", blob.data, blob.etag)
        self.write_outputs(outbox)
        self.unreceipted.discard((model, name))  # the host writes its receipt after a success
        return result

    def drop(self, model: str, name: str, frame: pd.DataFrame) -> dict[str, Any]:
        self.put_drop(model, name, frame)
        return self.fire_drop(model, name)

    # -- what the host does ---------------------------------------------------------------------

    def handle(self, queue: str, body: bytes, dequeue_count: int) -> Any:
        """One invocation; its output-binding messages are written after it returns, as the host does."""
        ctx, outbox = self.ctx.fresh().with_outbox()
        if queue == paths.RETRAIN_QUEUE:
            result = retrain(ctx, body, dequeue_count)
        elif queue in POISON_QUEUES:
            result = give_up(ctx, queue.removesuffix("-poison"), body)
        else:
            result = deliver(ctx, queue, body, dequeue_count)
        self.write_outputs(outbox)
        return result

    def write_outputs(self, outbox: Outbox) -> None:
        """The host's output-binding writes (before it completes the trigger: a crash here loses them)."""
        for queue, texts in outbox.messages.items():
            for text in texts:
                self.storage.enqueue_raw(queue, encode_message(text))

    def receive(self, queue: str) -> QueuedMessage | None:
        got = self.storage.receive(queue, max_messages=1, visibility_timeout=HOST_LEASE_SECONDS)
        return got[0] if got else None

    def deliver_one(self, queue: str, message: QueuedMessage | None = None) -> bool:
        """Run one visible message of `queue` as the host would; False when there was none."""
        message = message or self.receive(queue)
        if message is None:
            return False
        body = base64.b64decode(message.content)
        try:
            result = self.handle(queue, body, message.dequeue_count)
        except Crash:
            raise
        except Exception as exc:
            self.log.append((queue, f"{type(exc).__name__}: {exc}"))
            if message.dequeue_count >= MAX_DEQUEUE and queue not in POISON_QUEUES:
                self.storage.enqueue_raw(paths.poison(queue), message.content)
                self.storage.delete_message(queue, message)
            else:
                self.storage.release(queue, message, visibility_timeout=VISIBILITY_TIMEOUT)
            return True
        self.log.append((queue, result))
        self.storage.delete_message(queue, message)
        return True

    def pending(self) -> int:
        return sum(self.storage.queue_length(q) for q in (*PIPELINE_QUEUES, *POISON_QUEUES))

    def run_until_idle(self, *, max_steps: int = 500, tick: float = 30.0,
                       until: Callable[[], bool] | None = None) -> None:
        """Deliver everything, moving time forward (and sweeping every `tick`) while only hidden messages
        remain; stops early once `until()` holds."""
        for _ in range(max_steps):
            if until is not None and until():
                return
            for model, name in sorted(self.unreceipted):  # the host's blob scan fires again without a receipt
                self.fire_drop(model, name)
            if any(self.deliver_one(q) for q in (*PIPELINE_QUEUES, *POISON_QUEUES)):
                continue
            if until is None and not self.pending() and not self.open_claims():
                return
            self.clock.advance(tick)
            sweep(self.ctx.fresh())
        raise AssertionError(f"pipeline did not go idle in {max_steps} steps; log tail: {self.log[-5:]}")

    def open_claims(self) -> list[str]:
        return self.storage.blob_names(paths.MLOPS, paths.open_claims_prefix())
