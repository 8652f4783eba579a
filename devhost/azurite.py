"""Start and stop Azurite (from node_modules) on chosen or free loopback ports."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(blob_port: int, queue_port: int) -> str:
    """The connection string for an Azurite on these ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{ACCOUNT};"
    )


def listening(port: int) -> bool:
    """True if something accepts connections on this loopback port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Azurite:
    """A running Azurite process."""

    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    location: Path
    started_seconds: float

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port)

    def stop(self) -> None:
        """Stop Azurite and wait for it (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def azurite_binary() -> str:
    """Path of the Azurite launcher installed by `npm ci`."""
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root (or `make setup`).")


# V8's young generation at 64 MB a semi-space (16 by default on 64-bit): Azurite makes short-lived objects for
# every request and every piece of a body it takes or serves, and with the default it spent up to twice the CPU
# in scavenges once its heap held a pipeline run's state (a million-row file's batch scoring: 1.7-1.9 -> 0.86-0.98
# CPU s of Azurite's, the run 1.64 -> 1.2-1.3 s; on a fresh Azurite 0.77 -> 0.72). bench/README.md has the runs.
YOUNG_GENERATION = "--max-semi-space-size=64"


def azurite_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment Azurite runs in: this one, with YOUNG_GENERATION after any NODE_OPTIONS of its own."""
    return {**environ, "NODE_OPTIONS": f"{environ.get('NODE_OPTIONS', '')} {YOUNG_GENERATION}".strip()}


def start_azurite(
    location: Path, *, blob_port: int | None = None, queue_port: int | None = None,
    timeout: float = 60.0, log_path: Path | None = None,
) -> Azurite:
    """Start Azurite (blob + queue) on loopback and wait until both ports accept connections."""
    blob_port = blob_port or free_port()
    queue_port = queue_port or free_port()
    location.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    started = time.monotonic()
    process = subprocess.Popen(
        [
            azurite_binary(), "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(free_port()),
            "--location", str(location),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=azurite_environment(os.environ),
        start_new_session=True,  # Ctrl-C in the terminal reaches us, we stop Azurite ourselves
    )
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode} during start (log: {log_path})")
        if listening(blob_port) and listening(queue_port):
            return Azurite(process, blob_port, queue_port, location, time.monotonic() - started)
        time.sleep(0.05)  # polling a port with a deadline, not a synchronisation sleep
    process.kill()
    raise RuntimeError(f"Azurite did not listen on ports {blob_port}/{queue_port} within {timeout:.0f}s")
