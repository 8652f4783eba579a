"""Drop to promoted champion: wall time of the real pipeline under the local host, and where it goes.

One process: a private Azurite on free ports, the app under devhost (in-process), the breast-cancer
example spec uploaded under a fresh model name per round, its dataset dropped, and the wall time
from the upload until the champion alias is set. Each round also adds up the stage functions' own
durations (the host's "Executed ... Duration=" lines of prepare, train, export and validate), so
`wall / stages` is the hand-off overhead: Event Grid delivery, queue hops and polling.

Two ways of handing off, interleaved in every round (same process, same load):
  watcher: queue output bindings wake the host's listener of the next queue at once (what the app
           does, on Azure and locally: the WebJobs SDK's SharedQueueWatcher);
  polling: the same output bindings with the watcher switched off, so each hop waits for its
           listener's next poll (host.json maxPollingInterval), as SDK-sent messages do.
The first drop of the process pays the training libraries' imports (light cold start: nothing
imports them until a training stage runs); it is reported apart and not counted.

    .venv/bin/python bench/bench_pipeline.py [--rounds 5] [--scan-interval 0.25]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost import DevHost  # noqa: E402
from devhost.azurite import start_azurite  # noqa: E402
from devhost.blobs import BLOB_SCAN_INTERVAL  # noqa: E402
from devhost.outputs import QueueWatcher  # noqa: E402
from shared import paths, registry  # noqa: E402
from shared.errors import NotFound  # noqa: E402

SPEC = ROOT / "examples" / "specs" / "breast-cancer.yaml"
STAGES = ("prepare", "train", "export", "validate")
EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \(Succeeded, Id=[^,]+, Duration=(\d+)ms\)")


class Durations(logging.Handler):
    """Collects the host's Executed lines: function -> durations in ms, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = EXECUTED.search(record.getMessage())
        if m:
            self.seen.append((m.group(1), int(m.group(2))))


@dataclass
class Drop:
    mode: str
    wall: float
    stages_ms: int


def drop_until_champion(host: DevHost, model: str, csv: bytes, timeout: float = 120.0) -> float:
    """Upload the spec as `model`, drop the data, return seconds until the champion alias is set."""
    storage = host.storage()
    spec = SPEC.read_text().replace("name: breast-cancer", f"name: {model}", 1).encode()
    registry.upload_spec(storage, spec, "spec.yaml", origin={"via": "bench"})
    started = time.perf_counter()
    storage.write(paths.DATASETS, f"{model}/data.csv", csv)
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            if registry.get_aliases(storage, model)[0].champion is not None:
                return time.perf_counter() - started
        except NotFound:
            pass
        time.sleep(0.005)  # the measurement's own polling: 5 ms resolution
    raise TimeoutError(f"{model}: no champion after {timeout}s")


def one(host: DevHost, durations: Durations, mode: str, model: str, csv: bytes, watcher: QueueWatcher) -> Drop:
    assert host._invoker.outputs is not None
    host._invoker.outputs.watcher = watcher if mode == "watcher" else QueueWatcher()  # empty: nobody woken
    before = len(durations.seen)
    wall = drop_until_champion(host, model, csv)
    time.sleep(0.3)  # let validate's Executed line arrive (it is logged after the alias flip)
    stages = sum(ms for name, ms in durations.seen[before:] if name in STAGES)
    return Drop(mode, wall, stages)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--idle", type=float, default=5.0,
                   help="seconds the host sits idle before each drop (its listeners back off meanwhile, as between "
                        "real drops)")
    p.add_argument("--scan-interval", type=float, default=BLOB_SCAN_INTERVAL,
                   help="seconds between the local Event Grid's container scans (devhost --blob-scan-interval)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    durations = Durations()
    logging.getLogger("devhost").addHandler(durations)
    logging.getLogger("devhost").setLevel(logging.INFO)
    # made in a child process: importing sklearn here would pre-warm the first drop's training imports
    csv = subprocess.run([sys.executable, "-c", "import sys; from examples.datasets import breast_cancer; "
                          "breast_cancer().to_csv(sys.stdout, index=False)"], cwd=ROOT, capture_output=True,
                         check=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as tmp:
        azurite = start_azurite(Path(tmp) / "azurite")
        host = DevHost(ROOT, env={"AzureWebJobsStorage": azurite.connection_string, "MLOPS_MONITOR_SCHEDULE":
                                  "0 0 0 1 1 *"}, port=0, auth=False, blob_scan_interval=args.scan_interval)
        try:
            host.start()
            assert host._invoker.outputs is not None
            watcher = host._invoker.outputs.watcher
            cold = one(host, durations, "watcher", "bench-cold", csv, watcher)
            drops: list[Drop] = []
            for r in range(args.rounds):
                for mode in (("watcher", "polling") if r % 2 == 0 else ("polling", "watcher")):
                    time.sleep(args.idle)  # idle host: the queue listeners' back-off grows to maxPollingInterval
                    drops.append(one(host, durations, mode, f"bench-{mode}-{r}", csv, watcher))
        finally:
            host.stop(grace_seconds=5)
            azurite.stop()
    report(cold, drops, args)
    return 0


def report(cold: Drop, drops: list[Drop], args: argparse.Namespace) -> None:
    print(f"\nDrop -> promoted champion, breast-cancer example, {args.rounds} rounds, {args.idle}s idle before "
          f"each drop, local Event Grid scan every {args.scan_interval}s, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"first drop of the process (training imports): {cold.wall:.2f}s wall, stages {cold.stages_ms} ms")
    print("| hand-off | wall p50 (s) | wall min-max (s) | stages p50 (s) | wall / stages |")
    print("|---|---|---|---|---|")
    for mode in ("watcher", "polling"):
        got = [d for d in drops if d.mode == mode]
        wall = statistics.median(d.wall for d in got)
        stages = statistics.median(d.stages_ms for d in got) / 1000
        print(f"| {mode} | {wall:.2f} | {min(d.wall for d in got):.2f}-{max(d.wall for d in got):.2f} | "
              f"{stages:.2f} | {wall / stages:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
