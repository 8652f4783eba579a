"""`python -m devhost`: run the function app locally without Core Tools (Ctrl-C or SIGTERM to stop)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devhost.azurite import ROOT, Azurite, listening, start_azurite
from devhost.blobs import BLOB_SCAN_INTERVAL
from devhost.config import DevHostError
from devhost.console import BatchedConsoleHandler
from devhost.host import DEFAULT_CONNECTION, DevHost

log = logging.getLogger("devhost")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    p.add_argument("--app-dir", type=Path, default=ROOT, help="folder with function_app.py (default: repo root)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: Host.LocalHttpPort or 7071)")
    p.add_argument("--settings", type=Path, default=None, help="settings file (default: <app-dir>/local.settings.json)")
    p.add_argument("--no-auth", action="store_true", help="serve every HTTP function as anonymous")
    p.add_argument("--with-azurite", action="store_true",
                   help="start Azurite (data in <app-dir>/.azurite), stop it on exit")
    p.add_argument("--azurite-blob-port", type=int, default=10000)
    p.add_argument("--azurite-queue-port", type=int, default=10001)
    p.add_argument("--examples", action="store_true", help="seed the bundled example specs and datasets, "
                   "then log each model's champion and a curl line to score it")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to let running invocations finish on stop")
    p.add_argument("--blob-scan-interval", type=float, default=BLOB_SCAN_INTERVAL,
                   help="seconds between container scans: LogsAndContainerScan blob triggers, and the local Event Grid "
                        "that turns new blobs into BlobCreated events for EventGrid-source triggers "
                        "(default %(default)s)")
    p.add_argument("--no-event-grid", action="store_true",
                   help="no local Event Grid: EventGrid-source blob triggers fire only from events POSTed to "
                        "/runtime/webhooks/blobs (by hand, or by a real subscription through a tunnel)")
    return p.parse_args(argv)


def _azurite(args: argparse.Namespace) -> Azurite:
    for port in (args.azurite_blob_port, args.azurite_queue_port):
        if listening(port):
            raise DevHostError(f"port {port} is already in use: is Azurite already running? Then drop "
                               "--with-azurite (or pass --azurite-blob-port/--azurite-queue-port)")
    location = args.app_dir.resolve() / ".azurite"
    try:
        azurite = start_azurite(location, blob_port=args.azurite_blob_port, queue_port=args.azurite_queue_port,
                                log_path=location / "azurite.log")
    except RuntimeError as exc:
        raise DevHostError(str(exc)) from exc
    log.info("Azurite started in %.1fs (blob=%d, queue=%d, data=%s)", azurite.started_seconds,
             azurite.blob_port, azurite.queue_port, location)
    return azurite


def _run_examples(host: DevHost) -> None:
    try:
        from devhost import examples  # pandas and the pipeline only when asked for

        storage = host.storage()
        for model in examples.seed(storage):
            threading.Thread(target=_report_champion, args=(host, model), daemon=True).start()
        code = f"?code={host.function_key}" if host.function_key else ""
        log.info("examples: model pages at %s/api/ui%s", host.url, code)
    except Exception:
        log.exception("examples: seeding failed")


def _report_champion(host: DevHost, model: str) -> None:
    from devhost import examples

    found = examples.wait_for_champions(host.storage(), [model])
    if model not in found:
        log.warning("examples: %s has no champion yet (pending approval or failed: see the logs above)", model)
        return
    log.info("examples: %s champion is version %d", model, found[model])
    try:
        log.info("examples: score %s with:\n  %s", model, examples.scoring_hint(model, host.port, host.function_key))
    except Exception:
        log.exception("examples: could not build the scoring example for %s", model)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT or SIGTERM sets `stop`; a second one exits at once."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            _flush_console()
            os._exit(130)  # a second Ctrl-C: leave now
        log.info("Received %s: stopping (again to exit immediately)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _flush_console() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, handlers=[BatchedConsoleHandler(sys.stdout)])
    # Every request logs the host's two Executing/Executed lines; the format shows no caller, thread or process, so
    # skip collecting them (the logging HOWTO's "Optimization" settings): ~40% of a line's cost.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    stop = threading.Event()
    _stop_on_signals(stop)
    azurite: Azurite | None = None
    host: DevHost | None = None
    try:
        env = {}
        if args.with_azurite:
            azurite = _azurite(args)
            env[DEFAULT_CONNECTION] = azurite.connection_string
        host = DevHost(args.app_dir, env=env, port=args.port, settings_path=args.settings, auth=not args.no_auth,
                       blob_scan_interval=args.blob_scan_interval, grace_seconds=args.grace,
                       event_grid=not args.no_event_grid).start()
        if args.examples:
            threading.Thread(target=_run_examples, args=(host,), name="examples", daemon=True).start()
        stop.wait()
        return 0
    except DevHostError as exc:
        _flush_console()  # the lines before it first: they wait to be written in batches
        print(f"devhost: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if host is not None:
            host.stop()
        if azurite is not None:
            azurite.stop()
            log.info("Azurite stopped")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
