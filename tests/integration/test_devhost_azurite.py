"""devhost.azurite: the Azurite every local run and test uses, started with its node options."""
from __future__ import annotations

from pathlib import Path

from devhost.azurite import YOUNG_GENERATION, Azurite, azurite_environment


def test_azurite_runs_with_the_young_generation_after_node_options_of_its_own(azurite: Azurite) -> None:
    environ = Path(f"/proc/{azurite.process.pid}/environ").read_bytes().split(b"\0")
    [options] = [v for v in environ if v.startswith(b"NODE_OPTIONS=")]
    assert options.decode().split("=", 1)[1].split()[-1] == YOUNG_GENERATION
    assert azurite_environment({"NODE_OPTIONS": "--max-semi-space-size=8 --trace-warnings", "A": "b"}) == {
        "NODE_OPTIONS": f"--max-semi-space-size=8 --trace-warnings {YOUNG_GENERATION}", "A": "b"}  # the last wins
    assert azurite_environment({})["NODE_OPTIONS"] == YOUNG_GENERATION
