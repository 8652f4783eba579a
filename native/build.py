"""Build the native number readers (native/numbers.rs) into shared/_native/, where shared.native_numbers
loads them: `python3 native/build.py`. rustc alone, no crates and no network (make runs this; the deploy
workflow runs it before packaging). Without the library the app reads the same bodies with pyarrow and
simdjson, slower.

Portable x86-64 code (no -C target-cpu): the library ships to whatever CPU the Functions host runs on."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.native_numbers import LIBRARY_PATH  # noqa: E402  (the path the loader reads, one definition)

SOURCE = ROOT / "native" / "numbers.rs"
FLAGS = ["--edition", "2021", "--crate-type", "cdylib", "-C", "opt-level=3", "-C", "codegen-units=1",
         "-C", "panic=abort", "-C", "strip=symbols"]


def main() -> int:
    rustc = shutil.which("rustc")
    if rustc is None:
        print("native/build.py: rustc not found (apt-get install rustc, or rustup)", file=sys.stderr)
        return 1
    LIBRARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    partial = LIBRARY_PATH.with_suffix(LIBRARY_PATH.suffix + ".partial")
    subprocess.run([rustc, *FLAGS, str(SOURCE), "-o", str(partial)], check=True)
    partial.replace(LIBRARY_PATH)  # a loader never sees half a library
    print(f"built {LIBRARY_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
