"""Helpers for end-to-end tests: example specs under unique names, drops, polling runs."""
from __future__ import annotations

import io
from typing import Any, Callable

import pandas as pd
import yaml

from devhost.azurite import ROOT
from shared import paths, registry, runs
from shared.errors import NotFound, Unavailable
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import wait_for

SPECS = ROOT / "examples" / "specs"
TERMINAL = {"promoted", "rejected", "pending_approval", "failed", "duplicate"}


def example_spec(example: str, name: str, **changes: Any) -> dict[str, Any]:
    """An example spec as a dict, renamed, with top-level fields replaced."""
    spec = yaml.safe_load((SPECS / f"{example}.yaml").read_text())
    spec.update(name=name, **changes)
    return spec


def upload(storage: AzureStorage, spec: dict[str, Any]) -> str:
    """Validate and store a spec dict; returns its hash."""
    return registry.upload_spec(storage, yaml.safe_dump(spec).encode(), "spec.yaml")[1]


def drop(storage: AzureStorage, model: str, name: str, frame: pd.DataFrame) -> str:
    """Drop a dataset as CSV into datasets/<model>/<name>; returns the blob path inside the container."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    storage.write(paths.DATASETS, f"{model}/{name}", buf.getvalue().encode())
    return f"{model}/{name}"


def run_for(storage: AzureStorage, model: str, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The newest run of a model matching predicate, if any."""
    for run in runs.list_runs(storage, model):
        if predicate(run):
            return run
    return None


def wait_for_run(storage: AzureStorage, model: str, source_name: str | None = None, *, timeout: float = 120.0,
                 statuses: set[str] = TERMINAL) -> dict[str, Any]:
    """Poll until a run of `model` (from the dropped file `source_name`, if given) reaches one of statuses."""

    def check() -> dict[str, Any] | None:
        try:
            return run_for(storage, model, lambda r: r.get("status") in statuses and (
                source_name is None or str(r.get("source_blob", "")).endswith(f"/{source_name}")))
        except NotFound:
            return None

    return wait_for(check, f"a run of {model} ({source_name}) reaching {sorted(statuses)}", timeout=timeout)


def champion(storage: AzureStorage, model: str) -> int | None:
    """The champion version of a model, or None."""
    try:
        return registry.resolve_alias(storage, model)[0]
    except (NotFound, Unavailable):
        return None
