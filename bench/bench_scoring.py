"""Benchmark the scoring path: bare onnxruntime, our handler, sklearn, and HTTP (devhost vs MLflow).

One process measures everything in-process; the servers it compares (Azurite + `python -m devhost`,
`mlflow models serve` from bench/.mlflow-venv) are child processes on free loopback ports, stopped in
`finally`. Every loop is bounded in count and time. See bench/README.md.

    .venv/bin/python bench/bench_scoring.py [--quick] [--skip-mlflow] [--out bench/out/results.md]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import http.client
import io
import itertools
import json
import math
import os
import pickle
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import orjson  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.ipc as pa_ipc  # noqa: E402
import simdjson  # noqa: E402
import sklearn  # noqa: E402
import yaml  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from devhost.azurite import free_port, listening, start_azurite  # noqa: E402
from devhost.blobs import UPLOAD_SCAN_INTERVAL  # noqa: E402
from examples.datasets import breast_cancer  # noqa: E402
from shared import arrow_bodies, batch_scoring, json_rows, native_numbers, paths, registry  # noqa: E402
from shared.data_checks import prepare  # noqa: E402
from shared.errors import NotFound, Unavailable  # noqa: E402
from shared.memory_tuning import keep_freed_memory  # noqa: E402
from shared.onnx_export import export_onnx  # noqa: E402
from shared.scoring import (  # noqa: E402
    LABEL_INDEX,
    PACKED_INPUT,
    Encoded,
    ModelCache,
    load_model,
    parse_request,
    predict,
    score,
    session_options,
)
from shared.settings import Settings  # noqa: E402
from shared.spec import TrainingSpec, parse_spec  # noqa: E402
from shared.storage import AzureStorage  # noqa: E402
from shared.training import train  # noqa: E402

SPEC_FILE = ROOT / "examples" / "specs" / "breast-cancer.yaml"
MLFLOW_VENV = ROOT / "bench" / ".mlflow-venv"
MLFLOW_REQUIREMENTS = ROOT / "bench" / "requirements-mlflow.txt"
RF_ESTIMATOR = {"type": "random_forest", "params": {"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 2}}
BATCH_ROWS = 10_000
ROW_POOL = 64  # single-row requests cycle through this many distinct dataset rows
ROUNDS = 5  # each series is measured in this many interleaved rounds
MAX_BYTES = Settings.from_env({}).scoring_max_body_bytes  # the deployed default limit
JSON = {"Content-Type": "application/json"}
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
FILE_ROWS = 1_000_000  # rows of the CSV blob batch scoring reads
FILE_POLL = 0.02  # seconds between checks for the dropped file's results (a HEAD of Azurite each)
FILE_RUNS = 3  # runs of the file in a fresh interpreter per variant: its rows are the median's
DEVHOST_DROPS = 3  # drops of the file into devhost: its rows are the median's (one drop's time swings by a third here)
CORES = os.cpu_count() or 1
HEAP_TUNED = False  # shared.memory_tuning applied in this process (main)
BATCH_FORMATS = {"json": ("application/json", None), "csv": (CSV, CSV), "arrow": (ARROW, ARROW)}

# Runs inside bench/.mlflow-venv: log the pickled pipeline as an MLflow sklearn model.
MLFLOW_SAVE = """
import pickle, sys
import mlflow, mlflow.sklearn, skops.io
from mlflow.models import infer_signature
with open(sys.argv[1], "rb") as f:
    pipeline, sample = pickle.load(f)
signature = infer_signature(sample, pipeline.predict_proba(sample))
# MLflow's default format is skops, which asks the caller to trust the types it cannot vouch for.
trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
mlflow.sklearn.save_model(pipeline, sys.argv[2], signature=signature, pyfunc_predict_fn="predict_proba",
                          skops_trusted_types=trusted)
print(mlflow.__version__)
"""


# Runs in a fresh interpreter (its peak RSS is the figure): score one file dropped in a private Azurite.
FILE_CHILD = """
import json, hashlib, sys, time
sys.path.insert(0, sys.argv[1])
from shared import batch_scoring
from shared.memory_tuning import keep_freed_memory
from shared.scoring import ModelCache
keep_freed_memory()  # as function_app does when the host loads it
from shared.settings import Settings
from shared.storage import AzureStorage
conn, model, path, onnx_path, rate = sys.argv[2:7]
onnx = open(onnx_path, "rb").read()
sha = hashlib.sha256(onnx).hexdigest()
storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": conn}))
cache = ModelCache(lambda m, a: (1, "etag"), lambda m, v: (onnx, sha), 60.0)
cache.get(model)
def status(key):  # VmRSS / VmHWM of this process in MB (ru_maxrss would carry the parent's peak across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024
before = status("VmRSS")
cpu = time.process_time()  # every thread of this process
started = time.perf_counter()
out = batch_scoring.score_file(storage, cache, path, log_sample_rate=float(rate))
took = time.perf_counter() - started
print(json.dumps({"seconds": took, "rows": out.get("rows"), "outcome": out["outcome"], "rss_before_mb": before,
                  "peak_rss_mb": status("VmHWM"), "cpu_seconds": time.process_time() - cpu}))
"""


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server did not start, a response was wrong)."""


@dataclass(frozen=True)
class Counts:
    """Iterations per measurement (bounded)."""

    single: int
    batch: int
    http: int
    http_seconds: float  # wall-clock cap per HTTP series
    warmup: int


FULL = Counts(single=5000, batch=30, http=2000, http_seconds=120.0, warmup=200)
QUICK = Counts(single=500, batch=5, http=300, http_seconds=30.0, warmup=50)


@dataclass(frozen=True)
class Row:
    """One measured path: per-call p50/p99 in microseconds and calls (or rows) per second."""

    label: str
    p50_us: float
    p99_us: float
    per_second: float
    n: int


@dataclass(frozen=True)
class FileRow:
    """One batch-scoring run of the FILE_ROWS-row CSV file: seconds end to end and memory."""

    label: str
    seconds: float
    rows: int
    peak_rss_mb: float
    rss_before_mb: float
    cpu_seconds: float = math.nan  # CPU time of the process that scored (all its threads)
    storage_cpu_seconds: float = math.nan  # CPU time Azurite spent meanwhile (serving the reads and writes)

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_bound_per_second(self) -> float:
        """The rows per second this run's CPU work allows at best on this machine's cores (all of them busy
        all the time, with no wait): a floor of the wall time this work can take here."""
        return self.rows / ((self.cpu_seconds + self.storage_cpu_seconds) / CORES)


@dataclass
class Variant:
    """One trained model and everything the measurements feed it."""

    spec: TrainingSpec
    spec_yaml: bytes
    pipeline: Any
    onnx: bytes
    features: pd.DataFrame  # the dataset's feature columns, float64
    batch: pd.DataFrame  # BATCH_ROWS rows sampled from features
    single_bodies: list[bytes] = field(default_factory=list)
    batch_body: bytes = b""
    batch_csv: bytes = b""
    batch_arrow: bytes = b""
    files: dict[str, Row] = field(default_factory=dict)
    single: dict[str, Row] = field(default_factory=dict)
    batched: dict[str, Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()


# ---------------------------------------------------------------------------------------------
# Timing


def time_calls(fn: Callable[[Any], Any], items: Sequence[Any], n: int, warmup: int, start: int = 0) -> np.ndarray:
    """Nanoseconds per call of fn(item), items cycled from `start`; picking the item is not timed."""
    k = len(items)
    for i in range(warmup):
        fn(items[i % k])
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        item = items[(start + i) % k]
        t0 = clock()
        fn(item)
        out[i] = clock() - t0
    return out


Series = Callable[[int, int], np.ndarray]  # (calls, round) -> ns per call


def interleaved(series: dict[str, Series], n: int, rounds: int) -> dict[str, np.ndarray]:
    """Run every series in turn, `rounds` times with n/rounds calls each, so drifting machine load hits all alike."""
    chunks: dict[str, list[np.ndarray]] = {key: [] for key in series}
    per_round = max(1, n // rounds)
    for r in range(rounds):
        for key, run in series.items():
            gc.collect()
            chunks[key].append(run(per_round, r))
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def single_row(label: str, ns: np.ndarray) -> Row:
    return Row(label, float(np.percentile(ns, 50)) / 1e3, float(np.percentile(ns, 99)) / 1e3,
               1e9 / float(ns.mean()), len(ns))


def batch_row(label: str, ns: np.ndarray, rows: int) -> Row:
    p50 = float(np.percentile(ns, 50))
    return Row(label, p50 / 1e3, float(np.percentile(ns, 99)) / 1e3, rows * 1e9 / p50, len(ns))


# ---------------------------------------------------------------------------------------------
# Model and data


def make_variant(estimator: dict[str, Any] | None, name: str | None) -> Variant:
    """Train the breast-cancer example (optionally another estimator) exactly as the train stage does."""
    raw = SPEC_FILE.read_bytes()
    if estimator is not None:
        doc = yaml.safe_load(raw)
        doc.update(name=name, estimator=estimator, description=f"breast-cancer with {estimator['type']} (bench)")
        raw = yaml.safe_dump(doc, sort_keys=False).encode()
    spec = parse_spec(raw, SPEC_FILE.name)
    frame = prepare(breast_cancer(), spec).frame  # what the prepare stage hands to train()
    result = train(frame, spec)
    onnx_bytes = export_onnx(result.pipeline, spec, result.holdout.head(5))
    features = frame[spec.feature_names].astype(np.float64)
    rng = np.random.default_rng(0)
    batch = features.iloc[rng.integers(0, len(features), BATCH_ROWS)].reset_index(drop=True)
    variant = Variant(spec, raw, result.pipeline, onnx_bytes, features, batch)
    pool = features.iloc[rng.choice(len(features), ROW_POOL, replace=False)]
    variant.single_bodies = [split_body(pool.iloc[[i]]) for i in range(ROW_POOL)]
    variant.batch_body = split_body(batch)
    variant.batch_csv, variant.batch_arrow = csv_body(batch), arrow_body(batch)
    return variant


def split_body(df: pd.DataFrame) -> bytes:
    """MLflow's dataframe_split request body (the same bytes go to every server)."""
    return orjson.dumps({"dataframe_split": {"columns": list(df.columns), "data": df.to_numpy().tolist()}})


def csv_body(df: pd.DataFrame) -> bytes:
    """The same rows as a CSV body (header row; numbers as pandas writes them, the shortest repr)."""
    return df.to_csv(index=False).encode()


def arrow_body(df: pd.DataFrame) -> bytes:
    """The same rows as an Arrow IPC stream."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def batch_bodies(v: Variant) -> dict[str, bytes]:
    return {"json": v.batch_body, "csv": v.batch_csv, "arrow": v.batch_arrow}


def ort_feeds(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Session feeds as parse_request makes them: one contiguous [N, 1] float64 array per feature."""
    return {c: np.ascontiguousarray(df[c].to_numpy(np.float64).reshape(-1, 1)) for c in df.columns}


def packed_session(v: Variant) -> ort.InferenceSession | None:
    """The session of the packed companion graph export_onnx embedded in the model (shared.onnx_rewrite.packed),
    as scoring loads it, or None when the model has none."""
    return load_model(v.onnx, v.sha256, v.spec.name, 1).packed


def packed_feeds(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The packed graph's feed: every feature at once, feature-major [F, N] float64."""
    return {PACKED_INPUT: np.ascontiguousarray(df.to_numpy(np.float64).T)}


# ---------------------------------------------------------------------------------------------
# In-process measurements (1-3)


def bench_in_process(v: Variant, counts: Counts) -> None:
    """Fill v.single and v.batched with the floor, the handler and sklearn (interleaved rounds)."""
    session = ort.InferenceSession(v.onnx, sess_options=session_options(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs() if o.name != LABEL_INDEX]  # label and probabilities
    pool = [v.features.iloc[[i]] for i in range(ROW_POOL)]
    single_feeds = [ort_feeds(df) for df in pool]
    batch_feeds = [ort_feeds(v.batch)]
    handler = make_handler(v)
    csv_handler, arrow_handler = make_handler(v, "csv"), make_handler(v, "arrow")
    labels = {"ort": "bare onnxruntime session.run", "handler": "our handler: score() + orjson.dumps, no HTTP",
              "sklearn": "sklearn Pipeline.predict_proba"}
    packed = packed_session(v)
    if packed is not None:
        labels["ort_packed"] = ("(floor) bare onnxruntime session.run of the packed graph the model embeds "
                                "(probabilities and label index), which the handler runs for rows with no "
                                "missing value")
    batch_labels = {"handler_csv": "our handler: text/csv body, Accept: text/csv",
                    "handler_arrow": "our handler: Arrow IPC body, Accept: Arrow IPC",
                    "parse_json": "(floor) simdjson: parse the JSON body, its rows as one float64 buffer; "
                                  "nothing else",
                    "parse_csv": "(floor) pyarrow read_csv of the CSV body, float64 columns, both cores; "
                                 "nothing else",
                    "native_json": "(floor) the native reader (shared.native_numbers): the JSON body's rows "
                                   "into the column-major float64 matrix, both cores; nothing else",
                    "native_csv": "(floor) the native reader: the CSV body's lines into the matrix, both cores; "
                                  "nothing else",
                    "handler_python": "our handler without the native library (MLOPS_NATIVE_NUMBERS=0): json "
                                      "body (simdjson; the answer's row template)",
                    "handler_csv_python": "our handler without the native library: text/csv body (pyarrow), "
                                          "Accept: text/csv"}

    def series(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int) -> Series:
        return lambda n, r: time_calls(fn, items, n, warmup if r == 0 else 2, start=r * n)

    singles: dict[str, Series] = {
        "ort": series(lambda f: session.run(outputs, f), single_feeds, counts.warmup),
        "handler": series(handler, v.single_bodies, counts.warmup),
        "sklearn": series(v.pipeline.predict_proba, pool, counts.warmup),
    }
    batches: dict[str, Series] = {}
    if packed is not None:
        run_packed = packed.run
        fetched = [o.name for o in packed.get_outputs()]  # probabilities and the label index, not the labels
        singles["ort_packed"] = series(lambda f: run_packed(fetched, f), [packed_feeds(df) for df in pool],
                                       counts.warmup)
        batches["ort_packed"] = series(lambda f: run_packed(fetched, f), [packed_feeds(v.batch)], 2)
    with threadpool_limits(limits=1):  # sklearn gets the one thread onnxruntime has (session_options)
        single = interleaved(singles, counts.single, ROUNDS)
        batched = interleaved({
            **batches,
            "ort": series(lambda f: session.run(outputs, f), batch_feeds, 2),
            "handler": series(handler, [v.batch_body], 2),
            "handler_csv": series(csv_handler, [v.batch_csv], 2),
            "handler_arrow": series(arrow_handler, [v.batch_arrow], 2),
            "parse_json": series(json_parse_floor(), [v.batch_body], 2),
            "parse_csv": series(csv_parse_floor, [v.batch_csv], 2),
            "native_json": series(native_json_floor(v), [v.batch_body], 2),
            "native_csv": series(native_csv_floor(v), [v.batch_csv], 2),
            "handler_python": series(without_native(handler), [v.batch_body], 2),
            "handler_csv_python": series(without_native(csv_handler), [v.batch_csv], 2),
            "sklearn": series(v.pipeline.predict_proba, [v.batch], 2),
        }, counts.batch, ROUNDS)
    for key, label in labels.items():
        v.single[key] = single_row(label + (" (1-row DataFrame)" if key == "sklearn" else ""), single[key])
        v.batched[key] = batch_row(label, batched[key], BATCH_ROWS)
    for key, label in batch_labels.items():
        v.batched[key] = batch_row(label, batched[key], BATCH_ROWS)
    check_parity(v, handler)
    stage_breakdown(v, counts)


def json_parse_floor() -> Callable[[bytes], np.ndarray]:
    """What the JSON path's parse alone costs: simdjson's DOM of the body and its rows copied into one float64
    buffer, without the shape checks, the feeds or anything after them."""
    parser = simdjson.Parser()

    def parse(body: bytes) -> np.ndarray:
        rows = parser.parse(body)["dataframe_split"]["data"]
        try:
            return np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
        finally:
            del rows  # the parser is reused only once no proxy of its document is left

    return parse


def native_json_floor(v: Variant) -> Callable[[bytes], np.ndarray | None]:
    """What the native reader alone costs for a JSON body's rows (found as shared.json_rows finds them)."""
    width = len(v.spec.feature_names)
    signature = make_cache(v).get(v.spec.name).signature

    def parse(body: bytes) -> np.ndarray | None:
        parts = json_rows.split_rows(body, signature)
        assert parts is not None
        return native_numbers.json_rows_matrix(parts.rows, width)

    assert parse(v.batch_body) is not None, "the native reader is not built (make) or refused the body"
    return parse


def native_csv_floor(v: Variant) -> Callable[[bytes], native_numbers.Matrix | None]:
    """What the native reader alone costs for a CSV body, as shared.arrow_bodies calls it."""
    width = len(v.spec.feature_names)

    def parse(body: bytes) -> native_numbers.Matrix | None:
        return native_numbers.csv_matrix(body, body.index(b"\n") + 1, width)

    assert parse(v.batch_csv) is not None, "the native reader is not built (make) or refused the body"
    return parse


def without_native(handler: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """The handler as it runs when the native library is not built (the same run's A/B)."""

    def call(body: bytes) -> bytes:
        library, native_numbers.LIBRARY = native_numbers.LIBRARY, None
        try:
            return handler(body)
        finally:
            native_numbers.LIBRARY = library

    return call


def csv_parse_floor(body: bytes) -> pa.Table:
    """What pyarrow's CSV reader alone costs for a body, as shared.arrow_bodies calls it, every column float64."""
    names = body[: body.index(b"\n")].decode().split(",")
    return pa_csv.read_csv(
        pa.py_buffer(body),
        read_options=pa_csv.ReadOptions(use_threads=True, block_size=arrow_bodies.csv_block_size(len(body))),
        parse_options=arrow_bodies.UNQUOTED_CSV,
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64())))


def file_parse_floor(v: Variant, data: bytes) -> None:
    """The whole file parsed from memory by pyarrow's reader on both cores, nothing else (best of 3, with the
    CPU time that run took)."""
    best, cpu = min(timed_cpu(lambda: csv_parse_floor(data)) for _ in range(3))
    v.files["parse"] = FileRow("(floor) pyarrow read_csv of the file from memory, both cores; nothing else",
                               best, FILE_ROWS, math.nan, math.nan, cpu)
    width = len(v.spec.feature_names)
    cuts = [data.index(b"\n") + 1]  # the header's end, then line ends every ~CHUNK_BYTES, as batch_scoring cuts
    while cuts[-1] < len(data):
        cuts.append(min(len(data), data.find(b"\n", cuts[-1] + batch_scoring.CHUNK_BYTES) + 1 or len(data)))

    def native() -> None:
        for start, end in itertools.pairwise(cuts):
            assert native_numbers.csv_matrix(data, start, width, end) is not None

    best, cpu = min(timed_cpu(native) for _ in range(3))
    v.files["parse_native"] = FileRow(
        f"(floor) the native reader over the file from memory, in the batch path's {batch_scoring.CHUNK_BYTES >> 20} "
        "MB blocks one after another (each on both cores); nothing else", best, FILE_ROWS, math.nan, math.nan, cpu)


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads) of one call."""
    cpu, started = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - started, time.process_time() - cpu


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def stage_breakdown(v: Variant, counts: Counts) -> None:
    """Where the handler's time goes: p50 of parse_request, predict (session.run inside) and orjson.dumps."""
    loaded = make_cache(v).get(v.spec.name)
    for what, bodies, n, unit, scale in (("1 row", v.single_bodies, counts.single, "µs", 1e3),
                                         (f"{BATCH_ROWS:,} rows", [v.batch_body], counts.batch, "ms", 1e6)):
        inputs = [parse_request(b, "application/json", loaded.signature, MAX_BYTES) for b in bodies]
        results = [predict(loaded, i) for i in inputs]
        parts = {
            "parse_request": time_calls(lambda b: parse_request(b, "application/json", loaded.signature, MAX_BYTES),
                                        bodies, n, 10),
            "predict": time_calls(lambda i: predict(loaded, i), inputs, n, 10),
            "orjson.dumps": time_calls(lambda r: orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY), results, n, 10),
        }
        shown = ", ".join(f"{k} {np.percentile(t, 50) / scale:.2f} {unit}" for k, t in parts.items())
        v.notes.append(f"handler p50 by stage ({what}): {shown}")
    handler = make_handler(v)
    handler(v.batch_body)
    before = gc.get_count()[0]
    handler(v.batch_body)
    tracked = gc.get_count()[0] - before  # objects the collector tracks, made (and kept) by one call
    collections: list[int] = []
    gc.callbacks.append(counted := lambda phase, info: collections.append(info["generation"]) if phase == "start"
                        else None)
    try:
        ns = time_calls(handler, [v.batch_body], counts.batch, 2)
    finally:
        gc.callbacks.remove(counted)
    p50 = float(np.percentile(ns, 50))
    v.notes.append(f"handler {BATCH_ROWS:,}-row batch, alone: p50 {p50 / 1e6:.1f} ms = {BATCH_ROWS * 1e9 / p50:,.0f} "
                   f"rows/s; a call leaves {tracked} more objects for the cyclic GC, which ran {len(collections)} "
                   f"times in these {counts.batch} calls")


def make_cache(v: Variant) -> ModelCache:
    """A ModelCache whose registry is two in-memory lambdas (version 1 = v's ONNX)."""
    return ModelCache(lambda m, a: (1, "etag-1"), lambda m, ver: (v.onnx, v.sha256),
                      Settings.from_env({}).scoring_recheck_seconds)


def make_handler(v: Variant, fmt: str = "json") -> Callable[[bytes], bytes]:
    """score() over make_cache(v), then the response bytes as functions/score.py makes them.

    fmt: the body's format (json, csv, arrow); csv and arrow bodies ask for the same format back (Accept).
    """
    model = v.spec.name
    cache = make_cache(v)
    content_type, accept = BATCH_FORMATS[fmt]
    biggest = max(len(b) for b in batch_bodies(v).values())
    if biggest > MAX_BYTES:
        raise BenchError(f"batch body is {biggest} bytes > max_bytes={MAX_BYTES}; lower BATCH_ROWS")

    def handle(body: bytes) -> bytes:
        status, result, _ = score(cache, model, body, content_type, max_bytes=MAX_BYTES, accept=accept)
        if status != 200:
            raise BenchError(f"handler answered {status}: {result}")
        if isinstance(result, Encoded):
            return result.data
        return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)

    return handle


def positive_proba(doc: dict[str, Any], classes: list[str]) -> np.ndarray:
    """Probabilities of the last class from our response or MLflow's predict_proba response."""
    preds = doc["probabilities"] if "probabilities" in doc else doc["predictions"]
    if preds and isinstance(preds[0], dict):
        return np.array([p[classes[-1]] for p in preds])
    return np.array([p[-1] for p in preds])


def check_parity(v: Variant, handler: Callable[[bytes], bytes]) -> None:
    """Same model everywhere: compare the handler's batch probabilities with sklearn's."""
    ours = positive_proba(orjson.loads(handler(v.batch_body)), [str(c) for c in v.pipeline.classes_])
    theirs = v.pipeline.predict_proba(v.batch)[:, -1]
    v.notes.append(f"handler vs sklearn on the {BATCH_ROWS}-row batch: max |Δp| = {np.abs(ours - theirs).max():.2e}")
    positive = f"probability_{v.pipeline.classes_[-1]}"
    csv_answer = pa_csv.read_csv(pa.py_buffer(make_handler(v, "csv")(v.batch_csv))).column(positive).to_numpy()
    arrow_answer = pa_ipc.open_stream(make_handler(v, "arrow")(v.batch_arrow)).read_all().column(positive).to_numpy()
    v.notes.append(f"CSV and Arrow answers vs the JSON answer on the same rows: max |Δp| = "
                   f"{max(np.abs(csv_answer - ours).max(), np.abs(arrow_answer - ours).max()):.2e}")


# ---------------------------------------------------------------------------------------------
# Processes (4): Azurite + devhost, MLflow's scoring server


def wait_until(check: Callable[[], Any], what: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None, poll: float = 0.2) -> Any:
    """Poll check() every `poll` seconds until truthy; BenchError at the deadline or when proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with {proc.returncode}; log tail:\n{tail(log)}")
        time.sleep(poll)  # polling under a deadline
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; log tail:\n{tail(log)}")


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes], *, group: bool) -> None:
    """SIGTERM (the whole group we created when group=True), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Served:
    """The running devhost: its port, a gateway over its Azurite and its process."""

    port: int
    storage: AzureStorage
    proc: subprocess.Popen[bytes]
    log: Path
    azurite_pid: int


@contextlib.contextmanager
def devhost_server(tmp: Path, variants: list[Variant]) -> Iterator[Served]:
    """Azurite + `python -m devhost --no-auth`; upload specs, drop data, wait for every champion."""
    azurite = start_azurite(tmp / "azurite", log_path=tmp / "azurite.log")
    proc = None
    try:
        port = free_port()
        log = tmp / "devhost.log"
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "PYTHONUNBUFFERED": "1",
               "AzureFunctionsWebHost__hostid": "bench-scoring"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--port", str(port), "--no-auth",
                 "--grace", "2"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: listening(port), "devhost to listen", 60, proc, log)
        storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
        for v in variants:
            registry.upload_spec(storage, v.spec_yaml, f"{v.spec.name}.yaml", origin={"via": "bench"})
            buf = io.StringIO()
            breast_cancer().to_csv(buf, index=False)
            storage.write(paths.DATASETS, f"{v.spec.name}/{v.spec.name}.csv", buf.getvalue().encode(),
                          create_only=True)
        for v in variants:
            version = wait_until(lambda v=v: champion(storage, v.spec.name), f"{v.spec.name} champion", 600, proc, log)
            record = registry.get_version(storage, v.spec.name, version)
            served = storage.read(paths.MLOPS, record.artifacts["onnx"].path).data
            v.notes.append(f"devhost champion v{version}: {compare_onnx(v, served)}")
        yield Served(port, storage, proc, log, azurite.process.pid)
    finally:
        if proc is not None:
            stop_process(proc, group=False)
        azurite.stop()


def compare_onnx(v: Variant, served: bytes) -> str:
    """How the served ONNX relates to the in-process export (same bytes, or where and how much it differs)."""
    sha = hashlib.sha256(served).hexdigest()
    if sha == v.sha256:
        return f"ONNX sha256 {sha[:12]} identical to the in-process export"
    ours, theirs = onnx.load_from_string(v.onnx), onnx.load_from_string(served)
    parts = [name for name, a, b in (
        ("metadata", ours.metadata_props, theirs.metadata_props),
        ("graph", ours.graph, theirs.graph),
        ("opsets", ours.opset_import, theirs.opset_import),
        ("producer", (ours.producer_name, ours.producer_version), (theirs.producer_name, theirs.producer_version)),
    ) if a != b]
    feeds = ort_feeds(v.batch)
    run = [ort.InferenceSession(m, sess_options=session_options(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[1]
           for m in (v.onnx, served)]
    return (f"ONNX sha256 {sha[:12]} differs from the in-process export {v.sha256[:12]} "
            f"(in: {', '.join(parts) or 'other fields'}); "
            f"max |Δp| on the {BATCH_ROWS}-row batch = {np.abs(run[0] - run[1]).max():.2e}")


def champion(storage: AzureStorage, model: str) -> int | None:
    try:
        return registry.resolve_alias(storage, model)[0]
    except (NotFound, Unavailable):
        return None


def mlflow_python() -> Path:
    return MLFLOW_VENV / "bin" / "python"


def ensure_mlflow_venv() -> str:
    """Create bench/.mlflow-venv from requirements-mlflow.txt if mlflow does not import there; its version."""
    probe = [str(mlflow_python()), "-c", "import mlflow; print(mlflow.__version__)"]
    if mlflow_python().exists():
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout.strip()
    print(f"creating {MLFLOW_VENV} (pip install -r {MLFLOW_REQUIREMENTS.name}; several minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True, timeout=300)
    subprocess.run([str(mlflow_python()), "-m", "pip", "install", "-q", "-r", str(MLFLOW_REQUIREMENTS)],
                   check=True, timeout=1800)
    return subprocess.run(probe, capture_output=True, text=True, timeout=120, check=True).stdout.strip()


@contextlib.contextmanager
def mlflow_server(tmp: Path, v: Variant) -> Iterator[int]:
    """Save v's fitted pipeline with mlflow.sklearn.save_model, `mlflow models serve` it, wait for /ping."""
    work = tmp / f"mlflow-{v.spec.name}"
    work.mkdir()
    with open(work / "pipeline.pkl", "wb") as f:
        pickle.dump((v.pipeline, v.features.head(50)), f)
    env = {**os.environ, "PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_TRACKING_URI": (work / "mlruns").as_uri()}
    env.pop("VIRTUAL_ENV", None)
    saved = subprocess.run([str(mlflow_python()), "-c", MLFLOW_SAVE, str(work / "pipeline.pkl"), str(work / "model")],
                           capture_output=True, text=True, timeout=300, env=env, cwd=work)
    if saved.returncode != 0:
        raise BenchError(f"mlflow save_model failed:\n{saved.stderr[-3000:]}")
    port = free_port()
    log = work / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(work / "model"),
             "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own group: the server's workers are stopped with it
    try:
        wait_until(lambda: ping(port), "mlflow models serve /ping", 180, proc, log)
        yield port
    finally:
        stop_process(proc, group=True)


def ping(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class HttpClient:
    """One keep-alive http.client connection posting the same bodies for every server; counts reconnects."""

    def __init__(self, label: str, port: int, path: str, bodies: list[bytes],
                 headers: dict[str, str] | None = None) -> None:
        self.label, self.path, self.bodies = label, path, bodies
        self.headers = headers or JSON
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connects = 0
        self.sent = 0
        self.wall = 0.0

    def post(self, body: bytes) -> bytes:
        if self.conn.sock is None:
            self.connects += 1  # http.client reconnects by itself after the server closed the connection
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise BenchError(f"{self.label}: POST {self.path} answered {resp.status}: {data[:300]!r}")
        return data

    def warm(self, n: int) -> bytes:
        first = self.post(self.bodies[0])
        for i in range(n):
            self.post(self.bodies[i % len(self.bodies)])
        self.connects = 0
        return first

    def measure(self, n: int, deadline: float) -> np.ndarray:
        """Up to n sequential requests (fewer if the deadline passes); ns per request."""
        ns: list[int] = []
        started = time.perf_counter()
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            body = self.bodies[self.sent % len(self.bodies)]
            t0 = time.perf_counter_ns()
            self.post(body)
            ns.append(time.perf_counter_ns() - t0)
            self.sent += 1
        self.wall += time.perf_counter() - started
        return np.array(ns, dtype=np.int64)

    def row(self, ns: np.ndarray) -> tuple[Row, str]:
        row = Row(self.label, float(np.percentile(ns, 50)) / 1e3, float(np.percentile(ns, 99)) / 1e3,
                  len(ns) / self.wall, len(ns))
        how = "one keep-alive connection" if self.connects == 0 else (
            f"{self.connects} TCP connects: the server closed the connection after every response"
            if self.connects >= len(ns) else f"{self.connects} reconnects")
        return row, f"{self.label}: {len(ns)} sequential requests, {how}"

    def close(self) -> None:
        self.conn.close()


def bench_servers(tmp: Path, variants: list[Variant], counts: Counts, skip_mlflow: bool,
                  file_data: bytes | None) -> str | None:
    """4. HTTP on loopback: a 1,000,000-row CSV file dropped for batch scoring (first variant only), then devhost vs
    MLflow's server, interleaved per variant, then 10,000-row bodies over HTTP; returns the MLflow version."""
    version = None if skip_mlflow else ensure_mlflow_venv()
    with devhost_server(tmp, variants) as served:
        if file_data is not None:  # first: as early in the run as the in-process file runs (see file_through_devhost)
            file_through_devhost(variants[0], served, file_data)
        for v in variants:
            clients = {"devhost": HttpClient(f"HTTP: devhost POST /api/models/{v.spec.name}/score", served.port,
                                             f"/api/models/{v.spec.name}/score", v.single_bodies)}
            with contextlib.ExitStack() as stack:
                if version is not None:
                    mport = stack.enter_context(mlflow_server(tmp, v))
                    clients["mlflow"] = HttpClient(f"HTTP: MLflow {version} `mlflow models serve` /invocations",
                                                   mport, "/invocations", v.single_bodies)
                try:
                    measure_servers(v, clients, counts)
                finally:
                    for client in clients.values():
                        client.close()
        http_batches(variants[0], served.port, counts)
    return version


def http_batches(v: Variant, port: int, counts: Counts) -> None:
    """10,000-row bodies (JSON, CSV, Arrow; CSV and Arrow ask for the same format back) over one keep-alive
    connection to devhost."""
    path = f"/api/models/{v.spec.name}/score"
    for fmt, body in batch_bodies(v).items():
        content_type, accept = BATCH_FORMATS[fmt]
        client = HttpClient(f"HTTP: devhost, {fmt} body", port, path, [body],
                            {"Content-Type": content_type, **({"Accept": accept} if accept else {})})
        try:
            client.warm(2)
            ns = client.measure(counts.batch, time.monotonic() + 120)
        finally:
            client.close()
        v.batched[f"http_{fmt}"] = batch_row(client.label + (f", Accept {fmt}" if accept else ""), ns, BATCH_ROWS)


def measure_servers(v: Variant, clients: dict[str, HttpClient], counts: Counts) -> None:
    for key, client in clients.items():
        compare_response(v, key, client.warm(counts.warmup))
    deadline = time.monotonic() + counts.http_seconds * len(clients)
    results = interleaved({k: (lambda n, r, c=c: c.measure(n, deadline)) for k, c in clients.items()},
                          counts.http, ROUNDS)
    for key, client in clients.items():
        v.single[key], note = client.row(results[key])
        v.notes.append(note)
    wrk_series(v, clients, WRK_SECONDS[counts is QUICK])


def wrk_series(v: Variant, clients: dict[str, HttpClient], seconds: float) -> None:
    """The same servers and bodies driven by wrk, in interleaved rounds; a note instead when wrk is missing."""
    if WRK is None:
        v.notes.append("wrk is not installed (apt-get install wrk): no C-client series")
        return
    rounds: dict[str, list[WrkRun]] = {key: [] for key in clients}
    for _ in range(WRK_ROUNDS):  # interleaved, as the http.client series
        for key, client in clients.items():
            rounds[key].append(run_wrk(client, seconds))
    for key, client in clients.items():
        runs = rounds[key]
        requests = sum(r.requests for r in runs)
        label = client.label.replace("HTTP:", "HTTP (wrk):", 1)
        v.single[f"{key}_wrk"] = Row(label, statistics.median(r.p50_us for r in runs),
                                     statistics.median(r.p99_us for r in runs),
                                     requests / sum(r.seconds for r in runs), requests)
        v.notes.append(f"{label}: wrk -t1 -c1 (one keep-alive connection), {WRK_ROUNDS} rounds of {seconds:.0f} s, "
                       f"{requests} requests, median of the rounds' p50 and p99")


# wrk (C, epoll) on one connection: the same sequential keep-alive requests as HttpClient without http.client's
# own Python per request (~100 µs here), which both servers' http.client figures carry.
WRK = shutil.which("wrk")
WRK_ROUNDS = 3
WRK_SECONDS = {False: 5.0, True: 2.0}  # full, quick
_WRK_TIME = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


@dataclass(frozen=True)
class WrkRun:
    p50_us: float
    p99_us: float
    requests: int
    seconds: float


def run_wrk(client: HttpClient, seconds: float) -> WrkRun:
    """One wrk run posting client's bodies in turn over one connection; BenchError on any non-2xx answer."""
    assert WRK is not None
    bodies = ", ".join(f"[==[{b.decode()}]==]" for b in client.bodies)
    headers = ", ".join(f'["{k}"] = "{val}"' for k, val in client.headers.items())
    script = (f"local bodies = {{{bodies}}}\nlocal headers = {{{headers}}}\nlocal i = 0\n"
              f'request = function()\n  i = i % #bodies + 1\n  return wrk.format("POST", "{client.path}", '
              "headers, bodies[i])\nend\n")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        done = subprocess.run([WRK, "-t1", "-c1", f"-d{seconds:.0f}s", "--latency", "-s", lua.name,
                               f"http://127.0.0.1:{client.port}{client.path}"],
                              capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    found = {int(p): float(x) * _WRK_UNIT_US[unit] for p, x, unit in _WRK_TIME.findall(out)}
    count = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s)", out, re.MULTILINE)
    if done.returncode != 0 or "Non-2xx" in out or "Socket errors" in out or count is None or len(found) != 2:
        raise BenchError(f"{client.label}: wrk failed ({done.returncode}):\n{out[-2000:]}{done.stderr[-1000:]}")
    took = float(count.group(2)) * _WRK_UNIT_US[count.group(3)] / 1e6
    return WrkRun(found[50], found[99], int(count.group(1)), took)


def compare_response(v: Variant, who: str, body: bytes) -> None:
    classes = [str(c) for c in v.pipeline.classes_]
    theirs = positive_proba(orjson.loads(body), classes)
    expected = positive_proba(orjson.loads(make_handler(v)(v.single_bodies[0])), classes)
    v.notes.append(f"{who} response to the first request vs our handler: |Δp| = {abs(theirs - expected).max():.2e}")


# ---------------------------------------------------------------------------------------------
# 6. Batch scoring of a file


def file_csv(v: Variant) -> bytes:
    """FILE_ROWS rows (the batch sample repeated) as one CSV file with a header row."""
    table = pa.Table.from_pandas(v.batch, preserve_index=False)
    sink = io.BytesIO()
    pa_csv.write_csv(pa.concat_tables([table] * (FILE_ROWS // len(v.batch))), sink,
                     write_options=pa_csv.WriteOptions(quoting_style="none"))
    return sink.getvalue()


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples a process's VmRSS every 20 ms on a thread (its VmHWM would hold the peak of earlier phases)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError, ValueError):
                self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def bench_file_in_process(v: Variant, tmp: Path, data: bytes) -> None:
    """shared.batch_scoring.score_file in a fresh interpreter, every row logged and none, each run over a private
    Azurite of its own (a shared one was still busy with the previous run's blobs when the next began); FILE_RUNS
    rounds of the three, interleaved, and each row is its median run (the notes list every run)."""
    model_file = tmp / "model.onnx"
    model_file.write_bytes(v.onnx)
    runs: dict[str, list[FileRow]] = {}
    for n in range(FILE_RUNS):
        for key, rate, native, label in (
                ("file", 1.0, "1", "score_file in a fresh interpreter: results + every row logged"),
                ("file_unlogged", 0.0, "1", "score_file in a fresh interpreter: results only (log sample rate 0)"),
                ("file_python", 0.0, "0", "the same without the native library (MLOPS_NATIVE_NUMBERS=0): pyarrow "
                                          "parses the blocks")):
            runs.setdefault(key, []).append(score_file_child(v, tmp / f"azurite-{key}-{n}", data, model_file, rate,
                                                             native, f"{label} (median of {FILE_RUNS} runs)"))
    for key, rows in runs.items():
        v.files[key] = sorted(rows, key=lambda r: r.seconds)[len(rows) // 2]
        v.notes.append(f"{key} runs (s, CPU s of the scoring process + Azurite): " + "; ".join(
            f"{r.seconds:.2f} ({r.cpu_seconds:.2f} + {r.storage_cpu_seconds:.2f})" for r in rows))


def score_file_child(v: Variant, location: Path, data: bytes, model_file: Path, rate: float, native: str,
                     label: str) -> FileRow:
    """One run of FILE_CHILD over a private Azurite at `location` holding the file."""
    azurite = start_azurite(location, log_path=location.with_suffix(".log"))
    try:
        storage = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
        path = f"{v.spec.name}/bench-file.csv"
        storage.write(paths.SCORING_REQUESTS, path, data)
        azurite_cpu = process_cpu_seconds(azurite.process.pid)
        done = subprocess.run([sys.executable, "-c", FILE_CHILD, str(ROOT), azurite.connection_string,
                               v.spec.name, path, str(model_file), str(rate)],
                              capture_output=True, text=True, timeout=1800, cwd=ROOT,
                              env={**os.environ, "MLOPS_NATIVE_NUMBERS": native})
        if done.returncode != 0:
            raise BenchError(f"batch scoring child failed:\n{done.stderr[-3000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got["outcome"] != "scored" or got["rows"] != FILE_ROWS:
            raise BenchError(f"batch scoring child answered {got}")
        return FileRow(label, got["seconds"], got["rows"], got["peak_rss_mb"], got["rss_before_mb"],
                       got["cpu_seconds"], process_cpu_seconds(azurite.process.pid) - azurite_cpu)
    finally:
        azurite.stop()
        shutil.rmtree(location, ignore_errors=True)  # ~300 MB a run


def file_through_devhost(v: Variant, served: Served, data: bytes) -> None:
    """Drop the file into devhost's Azurite DEVHOST_DROPS times (a new name each time), each once devhost is idle;
    the rows are the median drop's (by time to results), the notes list every drop.

    Run before the HTTP series, not after them: this VM slows under minutes of full load (after a 20 s burn of
    both cores by two busy loops, nothing else, the same drop's function took 1.65 s against 1.19 s), so late in
    the run the drop measured the machine's state more than the app."""
    drops: list[_Drop] = []
    for n in range(DEVHOST_DROPS):
        settled = settle(served.proc.pid)  # the pipeline's last stages (or the last drop's log) may be finishing
        drop = drop_file(served, data, f"{v.spec.name}/bench-devhost-{n}.csv")
        drops.append(drop)
        if n == 0:
            v.notes.append(f"the {len(data) / 1e6:,.0f} MB CSV file ({FILE_ROWS:,} rows) was dropped into devhost "
                           f"{DEVHOST_DROPS} times, the first once it was idle ({settled:.1f} s after its champions "
                           f"were promoted, before the HTTP series); each took {drop.upload:.1f} s or so to upload "
                           "(not counted); devhost's peak includes its memory before the drops (training stack, "
                           "earlier requests); the trigger binds a BlobClient (SDK type), so no copy of the file is "
                           "held: score_file reads it in ranges")
    median = sorted(drops, key=lambda d: d.results)[len(drops) // 2]
    peak, before = max(d.peak_mb for d in drops), max(d.before_mb for d in drops)
    v.files["devhost"] = FileRow(f"devhost: drop -> results file (Event Grid scan, blob trigger; median of "
                                 f"{DEVHOST_DROPS} drops)", median.results, FILE_ROWS, peak, before,
                                 median.devhost_cpu, median.azurite_cpu)
    v.files["devhost_done"] = FileRow("devhost: drop -> function done (results + every row logged; the same drop)",
                                      median.done, FILE_ROWS, peak, before, median.devhost_cpu, median.azurite_cpu)
    if median.function is not None:
        v.files["devhost_function"] = FileRow("(info) devhost: the batch_score function alone (its Executed line's "
                                              "duration; the same drop)", median.function, FILE_ROWS, peak, before)
    v.notes.append("devhost drops, written -> results / done / the function alone (s), CPU s of devhost + Azurite "
                   "from written to done: " + "; ".join(
                       f"{d.results:.2f} / {d.done:.2f} / {'?' if d.function is None else f'{d.function:.2f}'}, "
                       f"{d.devhost_cpu:.2f} + {d.azurite_cpu:.2f}" for d in drops))


class _Drop(NamedTuple):
    """One drop of the file into devhost: seconds from written to its results and to done, the function's own
    duration (None without its Executed line), the CPU seconds devhost and Azurite spent from written to done,
    devhost's memory (peak during, RSS before) and the seconds the upload took."""

    results: float
    done: float
    function: float | None
    devhost_cpu: float
    azurite_cpu: float
    peak_mb: float
    before_mb: float
    upload: float


def drop_file(served: Served, data: bytes, path: str) -> _Drop:
    """Write the file to SCORING_REQUESTS/<path>; time until its results file exists and until the function has
    finished (the log's manifest written, the version marked completed), both polled every FILE_POLL seconds
    (a HEAD or a small read of Azurite each), so the poll adds at most that to what is timed."""
    before = rss_mb(served.proc.pid)
    with PeakRss(served.proc.pid) as peak:
        started = time.perf_counter()
        etag = served.storage.write(paths.SCORING_REQUESTS, path, data)
        written = time.perf_counter()
        cpu = process_cpu_seconds(served.proc.pid), process_cpu_seconds(served.azurite_pid)
        wait_until(lambda: served.storage.exists(paths.SCORING_RESULTS, paths.batch_result(path, "csv")),
                   "the batch results of the dropped file", 1800, served.proc, poll=FILE_POLL)
        results = time.perf_counter() - written
        wait_until(lambda: completed(served.storage, paths.batch_marker(path, etag)),
                   "the batch scoring function to finish", 1800, served.proc, poll=FILE_POLL)
        done = time.perf_counter() - written
        used = process_cpu_seconds(served.proc.pid) - cpu[0], process_cpu_seconds(served.azurite_pid) - cpu[1]
    try:  # the host writes its console lines in batches: the Executed line may follow the marker by a moment
        took = wait_until(lambda: function_milliseconds(served.log, "batch_score", f"{paths.SCORING_REQUESTS}/{path}"),
                          "the batch_score function's Executed line", 10, served.proc, poll=FILE_POLL)
    except BenchError:
        took = None
    return _Drop(results, done, None if took is None else took / 1000, *used, peak.peak, before, written - started)


def function_milliseconds(log: Path, function: str, blob: str) -> int | None:
    """The duration the host's Executed line gives for the invocation that a blob started (None if not found)."""
    text = log.read_text(errors="replace")
    started = re.search(rf"Executing 'Functions\.{function}' \(Reason='[^']*{re.escape(blob)}', Id=([0-9a-f-]+)\)",
                        text)
    if started is None:
        return None
    done = re.search(rf"Executed 'Functions\.{function}' \(Succeeded, Id={started.group(1)}, Duration=(\d+)ms\)",
                     text)
    return None if done is None else int(done.group(1))


def settle(pid: int, *, window: float = 1.0, busy: float = 0.05, timeout: float = 120.0) -> float:
    """Seconds until the process used less than `busy` of a core over `window` seconds (at most `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        cpu = process_cpu_seconds(pid)
        time.sleep(window)  # measuring a window of the process's CPU, not waiting for an event
        if process_cpu_seconds(pid) - cpu < busy * window:
            break
    return time.monotonic() - started


def completed(storage: AzureStorage, marker: str) -> bool:
    try:
        return bool(storage.read_json(paths.MLOPS, marker)[0].get("status") == "completed")
    except NotFound:
        return False


# ---------------------------------------------------------------------------------------------
# 5. Cold import


def cold_import_ms(runs: int = 5) -> tuple[float, list[float]]:
    """Median ms to `import shared.scoring` in a fresh interpreter (one discarded run warms the disk cache)."""
    code = "import time; t = time.perf_counter(); import shared.scoring; print(time.perf_counter() - t)"
    times = []
    for i in range(runs + 1):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              check=True)
        if i:
            times.append(float(done.stdout.strip()) * 1e3)
    return statistics.median(times), times


# ---------------------------------------------------------------------------------------------
# Report


def fmt(x: float) -> str:
    if x >= 100_000:
        return f"{x:,.0f}"
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def single_table(v: Variant) -> list[str]:
    base = v.single["ort"].p50_us
    out = ["| # | path (1 row per call) | p50 µs | p99 µs | calls/s | p50 × floor |", "|---|---|---:|---:|---:|---:|"]
    for key, num in (("ort", "1"), ("ort_packed", "1c"), ("handler", "2"), ("sklearn", "3"), ("devhost", "4a"),
                     ("mlflow", "4b"), ("devhost_wrk", "4c"), ("mlflow_wrk", "4d")):
        if key in v.single:
            r = v.single[key]
            out.append(f"| {num} | {r.label} | {fmt(r.p50_us)} | {fmt(r.p99_us)} | {fmt(r.per_second)} | "
                       f"{r.p50_us / base:.2f}× |")
    return out


def batch_table(v: Variant) -> list[str]:
    base = v.batched["ort"].per_second
    out = [f"| # | path ({BATCH_ROWS:,} rows per call) | p50 ms/call | rows/s | × floor time |",
           "|---|---|---:|---:|---:|"]
    for key, num in (("ort", "1"), ("parse_json", "1a"), ("parse_csv", "1b"), ("ort_packed", "1c"),
                     ("native_json", "1d"), ("native_csv", "1e"), ("handler", "2"), ("handler_csv", "2b"),
                     ("handler_arrow", "2c"), ("handler_python", "2d"), ("handler_csv_python", "2e"),
                     ("sklearn", "3"), ("http_json", "4a"), ("http_csv", "4b"), ("http_arrow", "4c")):
        if key in v.batched:
            r = v.batched[key]
            out.append(f"| {num} | {r.label} | {r.p50_us / 1e3:.2f} | {r.per_second:,.0f} | "
                       f"{base / r.per_second:.2f}× |")
    return out


def files_table(v: Variant) -> list[str]:
    out = [f"| batch scoring of a {FILE_ROWS:,}-row CSV file (breast-cancer, 30 features) | seconds | rows/s | "
           "peak RSS MB | RSS before scoring MB | CPU s: scoring process | CPU s: Azurite |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in v.files.values():
        out.append(f"| {r.label} | {r.seconds:.2f} | {r.per_second:,.0f} | {measured(r.peak_rss_mb, ',.0f')} | "
                   f"{measured(r.rss_before_mb, ',.0f')} | {measured(r.cpu_seconds, '.2f')} | "
                   f"{measured(r.storage_cpu_seconds, '.2f')} |")
    return out


def measured(value: float, spec: str) -> str:
    """A table cell: the value formatted, or a dash where the row does not measure it (NaN)."""
    return "—" if math.isnan(value) else format(value, spec)


Target = tuple[str, str, bool | None]  # what, measured, met (None: for information)


def http_targets(s: dict[str, Row]) -> list[Target]:
    """The HTTP target, measured with each client (http.client; wrk when installed)."""
    rows: list[Target] = []
    for suffix, client in (("", "http.client"), ("_wrk", "wrk (a C client)")):
        if f"mlflow{suffix}" in s and f"devhost{suffix}" in s:
            ratio = s[f"mlflow{suffix}"].p50_us / s[f"devhost{suffix}"].p50_us
            rows.append((f"HTTP single row, keep-alive, {client}: devhost ≥ 20× faster than MLflow's server (p50)",
                         f"{ratio:.1f}×", ratio >= 20))
    if "mlflow" in s:
        rows.append(("(info) handler without HTTP vs MLflow HTTP (p50)",
                     f"{s['mlflow'].p50_us / s['handler'].p50_us:.1f}×", None))
    return rows


def handler_targets(s: dict[str, Row], b: dict[str, Row]) -> list[Target]:
    """The in-process targets, each with the floors that bound it."""
    handler_x = s["handler"].p50_us / s["ort"].p50_us
    json_x = b["ort"].per_second / b["handler"].per_second
    rows: list[Target] = [("handler single-row p50 ≤ 2× bare ORT", f"{handler_x:.2f}×", handler_x <= 2)]
    if "ort_packed" in s:
        rows.append(("(info) the same against bare ORT on the packed graph the handler runs (1c)",
                     f"{s['handler'].p50_us / s['ort_packed'].p50_us:.2f}×", None))
    rows += [
        (f"handler {BATCH_ROWS:,}-row JSON dataframe_split ≥ 1 M rows/s", f"{b['handler'].per_second:,.0f} rows/s",
         b["handler"].per_second >= 1e6),
        (f"handler {BATCH_ROWS:,}-row JSON within 4× bare ORT (time)", f"{json_x:.2f}×", json_x <= 4),
        ("(info) floor of that: the native reader alone (1d) + bare ORT",
         f"{(b['ort'].p50_us + b['native_json'].p50_us) / b['ort'].p50_us:.2f}×", None),
        ("(info) the same without the native library (2d)",
         f"{b['ort'].per_second / b['handler_python'].per_second:.2f}×", None),
    ]
    if "ort_packed" in b:
        rows.append(("(info) the handler against bare ORT on the packed graph (1c)",
                     f"{b['ort_packed'].per_second / b['handler'].per_second:.2f}×", None))
    for key, what in (("handler_csv", "CSV"), ("handler_arrow", "Arrow IPC")):
        rows.append((f"handler {BATCH_ROWS:,}-row {what} body ≥ 3 M rows/s", f"{b[key].per_second:,.0f} rows/s",
                     b[key].per_second >= 3e6))
    rows += [("(info) floor of the CSV body: the native reader alone (1e)",
              f"{b['native_csv'].per_second:,.0f} rows/s", None),
             ("(info) the CSV body without the native library (2e)",
              f"{b['handler_csv_python'].per_second:,.0f} rows/s", None)]
    return rows


def file_targets(f: dict[str, FileRow]) -> list[Target]:
    rows: list[Target] = []
    for key, what in (("file", "in process, results + every row logged"), ("file_unlogged", "in process, results"),
                      ("devhost", "through devhost, drop -> results"),
                      ("devhost_done", "through devhost, drop -> done (every row logged)")):
        if key in f:
            r = f[key]
            rows.append((f"{FILE_ROWS:,}-row CSV file, {what}: ≥ 1 M rows/s", f"{r.per_second:,.0f} rows/s",
                         r.per_second >= 1e6))
    if "devhost_function" in f:
        r = f["devhost_function"]
        rows.append(("(info) through devhost, the batch_score function alone (its Executed line); the rest of drop -> "
                     f"results is the local Event Grid's scan (every {UPLOAD_SCAN_INTERVAL} s while a new blob is "
                     "being uploaded), the webhook and the polling",
                     f"{r.per_second:,.0f} rows/s ({r.seconds:.2f} s)", None))
    rows += file_floors(f)
    rows += file_cpu_bounds(f)
    if "file" in f:
        rows.append((f"{FILE_ROWS:,}-row CSV file in process: peak memory < 500 MB", f"{f['file'].peak_rss_mb:,.0f} MB",
                     f["file"].peak_rss_mb < 500))
    if "devhost" in f:
        r = f["devhost"]
        rows.append(("(info) devhost: peak RSS during the drop (RSS before it)",
                     f"{r.peak_rss_mb:,.0f} MB ({r.rss_before_mb:,.0f} MB)", None))
    return rows


def file_floors(f: dict[str, FileRow]) -> list[Target]:
    """The parses alone, and the in-process run without the native library."""
    rows: list[Target] = []
    for key, who in (("parse", "pyarrow's parse"), ("parse_native", "the native reader's parse")):
        if key in f:
            rows.append((f"(info) floor of the {FILE_ROWS:,}-row file: {who} alone, from memory",
                         f"{f[key].per_second:,.0f} rows/s ({f[key].cpu_seconds:.2f} CPU s)", None))
    if "file_python" in f:
        rows.append(("(info) in process, results, without the native library",
                     f"{f['file_python'].per_second:,.0f} rows/s", None))
    return rows


def file_cpu_bounds(f: dict[str, FileRow]) -> list[Target]:
    """How fast the file could go on this machine's cores: the runs' own CPU work, and the part no
    implementation avoids (the parse, storage serving the file and taking its results)."""
    rows: list[Target] = []
    for key, what in (("file", "the in-process run (results + every row logged)"),
                      ("file_unlogged", "the in-process run (results)"),
                      ("devhost_done", "the median drop through devhost, written to done")):
        if key in f and not math.isnan(f[key].cpu_seconds):
            r = f[key]
            rows.append((f"(info) CPU bound of {what}: its CPU seconds and Azurite's, "
                         f"spread over all {CORES} cores with no wait",
                         f"{r.cpu_bound_per_second:,.0f} rows/s ({r.cpu_seconds:.2f} + "
                         f"{r.storage_cpu_seconds:.2f} CPU s)", None))
    if "parse_native" in f and "file_unlogged" in f and not math.isnan(f["file_unlogged"].storage_cpu_seconds):
        unavoidable = f["parse_native"].cpu_seconds + f["file_unlogged"].storage_cpu_seconds
        rows.append((f"(info) floor on this machine: the native reader's parse (CPU) and Azurite's serving of the "
                     f"file and its results (CPU), over {CORES} cores, nothing else",
                     f"{FILE_ROWS / (unavoidable / CORES):,.0f} rows/s ({f['parse_native'].cpu_seconds:.2f} + "
                     f"{f['file_unlogged'].storage_cpu_seconds:.2f} CPU s)", None))
    return rows


def targets_table(v: Variant, import_ms: float) -> list[str]:
    rows = [*handler_targets(v.single, v.batched), *http_targets(v.single), *file_targets(v.files),
            ("cold import of shared.scoring ≤ 300 ms (median of 5)", f"{import_ms:.0f} ms", import_ms <= 300)]
    out = ["| target | measured | met |", "|---|---:|---|"]
    out += [f"| {t} | {m} | {'—' if ok is None else ('yes' if ok else '**no**')} |" for t, m, ok in rows]
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    heap = "glibc heap thresholds fixed as function_app sets them" if HEAP_TUNED else "glibc heap defaults"
    return f"{cpu}, nproc={os.cpu_count()}, Linux {platform.release()}, {heap}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(variants: list[Variant], import_ms: float, import_runs: list[float], mlflow_version: str | None,
           argv: list[str], counts: Counts) -> str:
    lines = [
        "## Scoring benchmark", "",
        f"- Command: `.venv/bin/python bench/bench_scoring.py {' '.join(argv)}`".replace("  ", " "),
        f"- Machine: {machine()}",
        f"- Python {platform.python_version()}, onnxruntime {ort.__version__}, scikit-learn {sklearn.__version__}, "
        f"pandas {pd.__version__}, MLflow {mlflow_version or 'skipped'} (separate venv)",
        f"- Iterations: {counts.single} single-row calls in-process, {counts.batch} batch calls, "
        f"{counts.http} sequential HTTP requests per server (warm-up {counts.warmup}); "
        "one thread for onnxruntime (shared.scoring.session_options) and for sklearn (threadpoolctl).",
        f"- Load average (1/5/15 min) at start: {LOAD_AT_START}, at end: {load_average()} "
        "(other work on the machine shows up here; the paths are measured in interleaved rounds)",
        f"- Cold import of shared.scoring: median {import_ms:.0f} ms ({', '.join(f'{t:.0f}' for t in import_runs)})",
        "",
    ]
    for i, v in enumerate(variants):
        numeric = sum(f.kind == "numeric" for f in v.spec.features)
        categorical = len(v.spec.features) - numeric
        title = f"### {v.spec.name}: {v.spec.estimator.type} ({numeric} numeric, {categorical} categorical features)"
        lines += [title, "", *single_table(v), "", *batch_table(v), ""]
        if v.files:
            lines += [*files_table(v), ""]
        if i == 0:
            lines += ["Targets (issue):", "", *targets_table(v, import_ms), ""]
        lines += ["Checks:", "", *[f"- {n}" for n in v.notes], ""]
    body = variants[0].single_bodies[0]
    lines += [f"Single-row request body (dataframe_split, {len(body)} bytes, same for every server; "
              f"the batch body is {len(variants[0].batch_body):,} bytes):", "", "```json", body.decode(), "```", ""]
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- bench_scoring: begin (generated) -->", "<!-- bench_scoring: end -->"


def readme_section(v: Variant, import_ms: float, argv: list[str]) -> list[str]:
    """The README's benchmark block: the command, machine and load, the report's tables and every target."""
    lines = [f"`.venv/bin/python bench/bench_scoring.py {' '.join(argv)}`".replace("  ", " ") +
             f" on {date.today().isoformat()}: {machine()}, Python {platform.python_version()}, onnxruntime "
             f"{ort.__version__}; load average at start {LOAD_AT_START}, at end {load_average()}; "
             f"{v.spec.name} {v.spec.estimator.type} ({len(v.spec.features)} inputs).", "",
             *single_table(v), "", *batch_table(v), ""]
    if v.files:
        lines += [*files_table(v), ""]
    return [*lines, *targets_table(v, import_ms)]


def write_between_markers(path: Path, lines: list[str]) -> None:
    """Replace what stands between README_BEGIN and README_END in `path` (both must be there)."""
    text = path.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise BenchError(f"{path} has no {README_BEGIN} ... {README_END} block to regenerate")
    path.write_text(text[:begin + len(README_BEGIN)] + "\n" + "\n".join(lines) + "\n" + text[end:])


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    p.add_argument("--skip-mlflow", action="store_true",
                   help="no MLflow server (if bench/.mlflow-venv cannot be built)")
    p.add_argument("--skip-http", action="store_true", help="no servers at all: in-process measurements only")
    p.add_argument("--no-rf", action="store_true", help="only the logistic-regression example")
    p.add_argument("--skip-files", action="store_true", help=f"no batch scoring of a {FILE_ROWS:,}-row CSV file")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "results.md")
    p.add_argument("--update-readme", action="store_true",
                   help="also regenerate the benchmark blocks of README.md (main rows and targets) and "
                        "bench/README.md (the full report)")
    return p.parse_args(argv)


LOAD_AT_START = load_average()


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    counts = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop our children
    # The in-process series run the handler as the deployed app does: function_app applies this at load.
    global HEAP_TUNED
    HEAP_TUNED = keep_freed_memory()
    print("training the models ...", flush=True)
    variants = [make_variant(None, None)]
    if not args.no_rf:
        variants.append(make_variant(RF_ESTIMATOR, "breast-cancer-rf"))
    for v in variants:
        print(f"in-process: {v.spec.name} ...", flush=True)
        bench_in_process(v, counts)
    print("cold import ...", flush=True)
    import_ms, import_runs = cold_import_ms()
    mlflow_version = None
    file_data = None if args.skip_files else file_csv(variants[0])
    if file_data is not None:
        file_parse_floor(variants[0], file_data)
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        if file_data is not None:
            print(f"batch scoring of a {FILE_ROWS:,}-row CSV file in a fresh interpreter ...", flush=True)
            bench_file_in_process(variants[0], Path(tmp), file_data)
        if not args.skip_http:
            print("HTTP: Azurite + devhost (waiting for the champions), then MLflow ...", flush=True)
            mlflow_version = bench_servers(Path(tmp), variants, counts, args.skip_mlflow, file_data)
    text = report(variants, import_ms, import_runs, mlflow_version, raw_argv, counts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    if args.update_readme:
        write_between_markers(ROOT / "README.md", readme_section(variants[0], import_ms, raw_argv))
        write_between_markers(ROOT / "bench" / "README.md", text.split("\n", 2)[2].rstrip().splitlines())
        print("regenerated the benchmark blocks of README.md and bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
