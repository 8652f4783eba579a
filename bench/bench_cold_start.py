"""Cold start: what importing function_app costs a fresh worker, against the scoring path's own imports.

Each figure is the median of N fresh interpreters (`python -X importtime` is not used: it slows the
imports it measures). For every module: wall time of the import inside the child, the child's peak
RSS (ru_maxrss) and which heavy ML libraries ended up in sys.modules. The ratio is against
`import shared.scoring` (onnxruntime + numpy: what a scoring instance cannot avoid), measured in the
same run.

    .venv/bin/python bench/bench_cold_start.py [--app-dir DIR] [--runs 7]

--app-dir measures another checkout (e.g. a `git worktree` of an older commit) with this venv.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("sklearn", "pandas", "scipy", "skl2onnx", "onnx", "pyarrow", "onnxruntime", "numpy")
CHILD = """
import json, resource, sys, time
t = time.perf_counter()
import {module}
took = time.perf_counter() - t
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"seconds": took, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "heavy": heavy}}))
"""


def measure(app_dir: Path, module: str, runs: int) -> dict[str, object]:
    got = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD.format(module=module, heavy=HEAVY)], cwd=app_dir,
                             env=env, capture_output=True, text=True, check=True, timeout=300)
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(g["seconds"] for g in got),
            "rss_mb": statistics.median(g["rss_mb"] for g in got), "heavy": got[-1]["heavy"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app-dir", type=Path, default=ROOT)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    app_dir = args.app_dir.resolve()
    for warm in ("function_app", "shared.scoring"):  # fill the OS file cache first: medians of warm-cache starts
        measure(app_dir, warm, 1)
    rows = {m: measure(app_dir, m, args.runs) for m in ("shared.scoring", "function_app")}
    base = float(rows["shared.scoring"]["seconds"])  # type: ignore[arg-type]
    print(f"\nCold import, median of {args.runs} fresh interpreters, {app_dir} ({os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f})")
    print("| import | seconds | peak RSS (MB) | x shared.scoring | heavy libraries loaded |")
    print("|---|---|---|---|---|")
    for module, row in rows.items():
        seconds = float(row["seconds"])  # type: ignore[arg-type]
        print(f"| `{module}` | {seconds:.2f} | {float(row['rss_mb']):.0f} | {seconds / base:.2f}x | "  # type: ignore[arg-type]
              f"{', '.join(row['heavy']) or '-'} |")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
