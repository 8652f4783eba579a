"""Upload a file straight to blob storage through a SAS URL the API handed out: in blocks, several at a time,
with a progress bar. Files of several GB never pass through a function.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient

from mlops_cli.errors import FAILED, UNREACHABLE, CliError

BLOCK_BYTES = 8 * 1024 * 1024  # also the largest single-request upload: anything bigger goes in blocks
CONCURRENCY = 4


@dataclass(frozen=True)
class Uploaded:
    """What storage answered for the committed blob."""

    etag: str
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"etag": self.etag, "bytes": self.bytes, "seconds": round(self.seconds, 3)}


Progress = Callable[[int, int, float], None]  # (bytes sent, total, seconds so far)


def upload(url: str, path: Path, *, overwrite: bool = False, progress: Progress | None = None,
           concurrency: int = CONCURRENCY, clock: Callable[[], float] = time.monotonic) -> Uploaded:
    """Upload path to the SAS URL (create-only unless overwrite). Raises CliError."""
    total = path.stat().st_size
    client = BlobClient.from_blob_url(url, max_single_put_size=BLOCK_BYTES, max_block_size=BLOCK_BYTES,
                                      connection_timeout=10, read_timeout=120, retry_total=3)
    lock, started = threading.Lock(), clock()

    def hook(current: int, _total: int | None) -> None:
        if progress is not None:
            with lock:  # blocks finish on several threads
                progress(current, total, clock() - started)

    with _translated(url, path), path.open("rb") as stream:
        result = client.upload_blob(stream, length=total, overwrite=overwrite, max_concurrency=concurrency,
                                    progress_hook=hook)
    return Uploaded(str(result["etag"]), total, clock() - started)


@contextmanager
def _translated(url: str, path: Path) -> Iterator[None]:
    """Storage's refusals in words: the blob exists, the URL expired or was refused, storage is unreachable."""
    blob, host = urlsplit(url).path, urlsplit(url).netloc
    try:
        yield
    except ResourceExistsError:
        raise CliError(f"{path.name} was dropped before under that name: pass --name <other name> (a new drop), "
                       "or --overwrite to replace it (its run is closed, a new one starts)", FAILED) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise CliError(f"cannot reach storage at {host} to upload {path.name}: {type(exc).__name__}",
                       UNREACHABLE) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise CliError(f"storage refused the upload URL for {blob} (403): it is valid for minutes only; run "
                           "the command again for a fresh one", UNREACHABLE) from None
        raise CliError(f"storage refused the upload of {path.name}: {exc.status_code} {exc.reason}",
                       FAILED) from None
