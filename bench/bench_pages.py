"""Benchmark the model pages' server side: build the view model from storage, then render the HTML.

Seeds one model with --versions versions (tests/unit/ui_records.py: statuses, alias history, one run per
version, the champion's holdout charts, a monitoring report with its training profile) and --models - 1
smaller neighbours, then times, per page, `load` (storage reads + view model) and `render` (Jinja2) over
--rounds calls after one warm-up call (the first call compiles the templates; it is reported apart),
first as a first view (the process cache emptied before each call, as in a new process: versions and
runs come from their page index in storage, shared/ui/index.py), then as a repeat view (nothing read
again that did not change), then as a first view without a page index (index blobs deleted too: every
version and run record read and the index written, as on the very first view of a model).
Storage is the in-memory fake by default; --azurite puts the same records in a private Azurite, so the
figures include the storage round trips a deployed app pays.

    .venv/bin/python bench/bench_pages.py [--versions 100] [--rounds 30] [--models 5] [--azurite]
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import paths  # noqa: E402
from shared.memory_storage import MemoryStorage  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import AzureStorage, Storage  # noqa: E402
from shared.ui import index, render, views  # noqa: E402
from shared.ui.serve import Links  # noqa: E402
from tests.unit.ui_records import seed_model  # noqa: E402

LINKS = Links("/api", "dev-function-key-change-me")
MODEL = "bench"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return (time.perf_counter() - start) * 1000, value


def forget(storage: Storage, view: str) -> None:
    """Empty what a new process would not have (and, for an unindexed view, the page index blobs)."""
    if view != "repeat":
        index.CACHE.clear()
    if view == "unindexed":
        for blob in storage.list(paths.MLOPS, "page-index/"):
            storage.delete(paths.MLOPS, blob.name)


def measure(storage: Storage, name: str, load: Callable[[], Any], html: Callable[[Any], str], rounds: int,
            view: str) -> dict[str, Any]:
    index.CACHE.clear()
    first_load, page = timed(load)
    first_render, body = timed(lambda: html(page))
    loads, renders = [], []
    for _ in range(rounds):
        forget(storage, view)
        ms, page = timed(load)
        loads.append(ms)
        ms, body = timed(functools.partial(html, page))
        renders.append(ms)
    totals = [a + b for a, b in zip(loads, renders, strict=True)]
    return {"page": name, "first_ms": first_load + first_render, "load_p50": statistics.median(loads),
            "render_p50": statistics.median(renders), "total_p50": statistics.median(totals),
            "total_max": max(totals), "html_kib": len(body.encode()) / 1024}


def seed(storage: Storage, versions: int, models: int) -> None:
    seed_model(storage, MODEL, versions, monitored=True)
    for i in range(models - 1):
        seed_model(storage, f"other-{i}", 5)


def run(storage: Storage, args: argparse.Namespace) -> list[dict[str, Any]]:
    seed(storage, args.versions, args.models)
    pending = args.versions
    pages: list[tuple[str, Callable[[], Any], Callable[[Any], str]]] = [
        (f"models list ({args.models} models)", lambda: views.load_models_page(storage, LINKS), render.models_html),
        (f"model page, champion ({args.versions} versions)",
         lambda: views.load_model_page(storage, MODEL, None, LINKS, {}), render.model_html),
        (f"model page, pending v{pending} with spec diff",
         lambda: views.load_model_page(storage, MODEL, pending, LINKS, {}), render.model_html),
    ]
    views_ = {"first": "", "repeat": ", repeat view", "unindexed": ", first view without page index"}
    return [measure(storage, f"{name}{suffix}", load, html, args.rounds, view)
            for view, suffix in views_.items() for name, load, html in pages]


def azurite_storage(stack: list[Any]) -> Storage:
    from devhost.azurite import start_azurite

    where = Path(tempfile.mkdtemp(prefix="bench-pages-azurite-"))
    azurite = start_azurite(where, log_path=where / "azurite.log")
    stack.append(azurite)
    return AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--azurite", action="store_true", help="seed a private Azurite instead of the memory fake")
    args = parser.parse_args(argv)
    started: list[Any] = []
    try:
        storage = azurite_storage(started) if args.azurite else MemoryStorage()
        results = run(storage, args)
    finally:
        for azurite in started:
            azurite.stop()
    where = "Azurite (loopback)" if args.azurite else "in-memory storage fake"
    print(f"\n{where}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.rounds} rounds after one warm-up\n")
    print("| page | first call ms | load p50 ms | render p50 ms | total p50 ms | total max ms | HTML KiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['page']} | {r['first_ms']:.1f} | {r['load_p50']:.1f} | {r['render_p50']:.1f} | "
              f"{r['total_p50']:.1f} | {r['total_max']:.1f} | {r['html_kib']:.0f} |")


if __name__ == "__main__":
    main()
