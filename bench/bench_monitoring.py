"""Benchmark drift monitoring over one window of the prediction log: read, parse, accumulate, judge.

Writes N synthetic logged predictions (a binary classifier with F numeric features, the logger's JSON
Lines format, blobs of --blob-rows rows as the logger flushes them) into a MemoryStorage, then times
shared.monitoring.window.iter_log_chunks + shared.monitoring.drift.DriftAccumulator over the window.
Baseline in the same run: reading the same blobs and orjson-parsing every line, nothing else.
Memory: peak RSS (ru_maxrss) before and after the timed runs, and the tracemalloc peak of one extra
pass (traced separately: tracing slows Python down), for --chunk-rows and for a 10x smaller chunk.

    .venv/bin/python bench/bench_monitoring.py [--rows 100000] [--features 50] [--chunk-rows 10000]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pandas as pd  # noqa: E402

from shared.memory_storage import MemoryStorage  # noqa: E402
from shared.monitoring.drift import (  # noqa: E402
    DriftAccumulator,
    DriftResult,
    holdout_output_profile,
    reference_sample_from_frame,
)
from shared.monitoring.window import feature_kinds, iter_log_chunks  # noqa: E402
from shared.paths import PREDICTIONS  # noqa: E402
from shared.profile import profile_dataset  # noqa: E402
from shared.spec import TrainingSpec, parse_spec  # noqa: E402

MODEL = "bench"
VERSION = 1
START = datetime(2024, 5, 1, tzinfo=UTC)
END = START + timedelta(hours=24)
CLASSES = ("0", "1")


@dataclass(frozen=True)
class Setup:
    spec: TrainingSpec
    profile: dict[str, Any]
    sample: dict[str, np.ndarray]
    holdout: dict[str, Any]
    storage: MemoryStorage
    stored_bytes: int
    blobs: int


def _spec(features: int) -> TrainingSpec:
    return parse_spec(json.dumps({
        "name": MODEL, "task": "classification", "target": "y",
        "features": [{"name": f"f{i:02d}", "kind": "numeric", "min": -100.0, "max": 100.0} for i in range(features)],
        "estimator": {"type": "logistic_regression"},
    }), "bench.json")


def _model(x: np.ndarray) -> np.ndarray:
    """p(class 1) of a fixed logistic model on the first two features."""
    return 1.0 / (1.0 + np.exp(-(x[:, 0] - 0.5 * x[:, 1])))


def _values(rng: np.random.Generator, rows: int, features: int) -> np.ndarray:
    # sensor-like values: a few decimals, like the JSON a client sends
    return np.round(rng.normal(10.0, 3.0, size=(rows, features)), 3)


def setup(rows: int, features: int, blob_rows: int, seed: int = 0) -> Setup:
    """Reference (profile, training sample, holdout outputs) and a window of logged predictions."""
    rng = np.random.default_rng(seed)
    spec = _spec(features)
    names = spec.feature_names
    train = pd.DataFrame(_values(rng, 20_000, features), columns=names)
    train["y"] = (rng.uniform(size=len(train)) < _model(train[names].to_numpy())).astype(np.int64)
    holdout_x = _values(rng, 5_000, features)
    p = _model(holdout_x)
    holdout = holdout_output_profile("classification", (p >= 0.5).astype(np.int64), np.column_stack([1 - p, p]),
                                     CLASSES)
    storage = MemoryStorage()
    stored = blobs = 0
    seconds_per_blob = (END - START).total_seconds() / max(1, rows // blob_rows)
    for number, begin in enumerate(range(0, rows, blob_rows)):
        # one blob at a time, so writing the window never holds more than one blob as Python objects
        first = START + timedelta(seconds=number * seconds_per_blob)
        data = _blob(rng, names, min(blob_rows, rows - begin), number, first, seconds_per_blob)
        flushed = START + timedelta(seconds=(number + 1) * seconds_per_blob - 1)
        storage.write(PREDICTIONS, f"{MODEL}/{flushed:%Y-%m-%d}/{flushed:%H%M%S}-{number:06d}.jsonl", data)
        stored += len(data)
        blobs += 1
    return Setup(spec, profile_dataset(train, spec), reference_sample_from_frame(train, spec), holdout, storage,
                 stored, blobs)


def _blob(rng: np.random.Generator, names: list[str], rows: int, number: int, first: datetime,
          seconds: float) -> bytes:
    x = _values(rng, rows, len(names))
    p = _model(x)
    offsets = np.sort(rng.uniform(0, seconds - 1, rows))
    lines = []
    for i, (row, prob, offset) in enumerate(zip(x.tolist(), p.tolist(), offsets.tolist(), strict=True)):
        request = f"req-{number}-{i // 10}"
        lines.append(orjson.dumps({
            "request_id": request, "prediction_id": f"{request}-{i % 10}", "model": MODEL, "version": VERSION,
            "timestamp": (first + timedelta(seconds=offset)).isoformat(timespec="milliseconds"),
            "inputs": dict(zip(names, row, strict=True)),
            "outputs": {"predictions": int(prob >= 0.5), "probabilities": {"0": 1.0 - prob, "1": prob}},
        }))
    return b"\n".join(lines) + b"\n"


def baseline(s: Setup) -> int:
    """Read every blob of the window and orjson-parse every line; nothing else."""
    rows = 0
    for info in s.storage.list(PREDICTIONS, f"{MODEL}/"):
        for line in s.storage.read(PREDICTIONS, info.name).data.splitlines():
            orjson.loads(line)
            rows += 1
    return rows


def monitor(s: Setup, chunk_rows: int) -> DriftResult:
    """The monitoring path: stream the window in chunks and fold them into drift."""
    accumulator = DriftAccumulator(s.spec, s.profile, s.sample, s.holdout)
    for chunk in iter_log_chunks(s.storage, MODEL, VERSION, START, END, chunk_rows, kinds=feature_kinds(s.spec)):
        accumulator.add(chunk)
    return accumulator.result()


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, value = [], None
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - began)
    return times, value


def _traced_peak(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--blob-rows", type=int, default=1000, help="rows per log blob (the logger's flush_rows)")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    began = time.perf_counter()
    s = setup(args.rows, args.features, args.blob_rows)
    took = time.perf_counter() - began
    print(f"setup: {s.blobs} blobs, {s.stored_bytes / 2**20:.1f} MiB of JSON Lines in {took:.1f} s")
    rss_before = _max_rss_mib()
    base_times, parsed = _timed(lambda: baseline(s), args.repeat)
    ours_times, result = _timed(lambda: monitor(s, args.chunk_rows), args.repeat)
    rss_after = _max_rss_mib()
    assert parsed == args.rows == result.rows, (parsed, result.rows)
    small = max(1, args.chunk_rows // 10)
    traced = {args.chunk_rows: _traced_peak(lambda: monitor(s, args.chunk_rows)),
              small: _traced_peak(lambda: monitor(s, small))}

    base, ours = statistics.median(base_times), statistics.median(ours_times)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.rows:,} rows x {args.features} numeric features, blobs of {args.blob_rows} rows, "
          f"chunk_rows={args.chunk_rows}; python {platform.python_version()}, {os.cpu_count()} cores, "
          f"load {load:.2f}; median of {args.repeat}")
    print("| path | wall s (median) | min..max s | rows/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    print(f"| baseline: read + orjson.loads per line | {base:.2f} | {min(base_times):.2f}..{max(base_times):.2f} "
          f"| {args.rows / base:,.0f} | 1.00 |")
    print(f"| iter_log_chunks + DriftAccumulator + result | {ours:.2f} | {min(ours_times):.2f}..{max(ours_times):.2f} "
          f"| {args.rows / ours:,.0f} | {ours / base:.2f} |")
    print("\n| memory | MiB |")
    print("|---|---:|")
    print(f"| stored log (JSON Lines in MemoryStorage) | {s.stored_bytes / 2**20:.1f} |")
    print(f"| peak RSS before the timed runs (ru_maxrss) | {rss_before:.0f} |")
    print(f"| peak RSS after the timed runs (ru_maxrss) | {rss_after:.0f} (+{rss_after - rss_before:.0f}) |")
    for size, peak in traced.items():
        print(f"| tracemalloc peak of one monitoring pass, chunk_rows={size} | {peak / 2**20:.1f} |")
    print(f"\nresult: status={result.status} dataset_drift={result.dataset_drift} "
          f"drifted={len(result.drifted_features)}/{args.features} prediction_drift={result.prediction_drift.drifted}")


if __name__ == "__main__":
    main()
