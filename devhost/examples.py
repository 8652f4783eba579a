"""Seed the bundled examples (specs + datasets) into storage and wait until each has a champion."""
from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from shared import paths, registry
from shared.errors import NotFound
from shared.spec import parse_spec
from shared.storage import AzureStorage

log = logging.getLogger("devhost.examples")
ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"


def example_frames() -> dict[str, pd.DataFrame]:
    """The bundled example datasets by model name (no network: sklearn ships the data)."""
    from examples.datasets import breast_cancer, diabetes, predictive_maintenance

    return {
        "breast-cancer": breast_cancer(),
        "diabetes": diabetes(),
        "predictive-maintenance": predictive_maintenance(),
    }


def seed(storage: AzureStorage, models: list[str] | None = None) -> list[str]:
    """Upload each example spec and drop its dataset (a re-seed re-drops nothing that exists)."""
    frames = example_frames()
    seeded = []
    for spec_file in sorted(SPECS.glob("*.yaml")):
        spec, _ = registry.upload_spec(storage, spec_file.read_bytes(), spec_file.name, origin={"via": "examples"})
        if models and spec.name not in models:
            continue
        buf = io.StringIO()
        frames[spec.name].to_csv(buf, index=False)
        path = f"{spec.name}/{spec.name}.csv"
        if not storage.exists(paths.DATASETS, path):
            storage.write(paths.DATASETS, path, buf.getvalue().encode(), create_only=True)
        log.info("examples: dropped %s/%s", paths.DATASETS, path)
        seeded.append(spec.name)
    return seeded


def wait_for_champions(
    storage: AzureStorage, models: list[str], *, timeout: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Poll until every model has a champion; returns model -> champion version."""
    deadline = clock() + timeout
    found: dict[str, int] = {}
    while clock() < deadline and len(found) < len(models):
        for model in models:
            if model in found:
                continue
            try:
                found[model] = registry.resolve_alias(storage, model)[0]
            except NotFound:
                pass
            except Exception as exc:  # Unavailable until promoted
                log.debug("examples: %s not served yet (%s)", model, exc)
        time.sleep(0.25)  # polling storage with a deadline
    return found


def scoring_hint(model: str, port: int, key: str | None) -> str:
    """A curl line that scores one row of the example dataset."""
    spec = parse_spec((SPECS / f"{model}.yaml").read_bytes(), f"{model}.yaml")
    row = example_frames()[model][spec.feature_names].head(1)
    body = json.dumps({"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}})
    auth = f' -H "x-functions-key: {key}"' if key else ""
    return (f"curl -s -X POST http://127.0.0.1:{port}/api/models/{model}/score{auth} "
            f"-H 'content-type: application/json' -d '{body}'")
