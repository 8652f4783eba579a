"""Generated production traffic for a demo of the closed loop: score rows over HTTP, send labels for a share.

Only the HTTP API is used (function key), as an application and its labelling process would.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests

BATCH = 200


@dataclass(frozen=True)
class SimulationResult:
    scored: int
    labelled: int
    feedback: dict[str, int]
    versions: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"scored": self.scored, "labelled": self.labelled, "feedback": self.feedback,
                "versions": self.versions}


DATASETS = ("predictive-maintenance", "diabetes", "breast-cancer")


def generated_rows(dataset: str, rows: int, drift: bool, seed: int) -> tuple[Any, str]:
    """(frame, target column) from a bundled example's generator."""
    from examples import datasets

    if dataset == "predictive-maintenance":
        return datasets.predictive_maintenance(n_rows=rows, seed=seed, drift=drift), "failure"
    frame, target = ((datasets.diabetes(), "progression") if dataset == "diabetes"
                     else (datasets.breast_cancer(), "diagnosis"))
    sample = frame.sample(rows, replace=True, random_state=seed).reset_index(drop=True)
    if drift:  # no drift generator for these: scale every numeric feature up by 20 %
        numeric = [c for c in sample.columns if c != target and sample[c].dtype.kind == "f"]
        sample[numeric] = sample[numeric] * 1.2
    return sample, target


def simulate(url: str, key: str, model: str, *, rows: int, drift: bool, label_share: float, seed: int = 11,
             dataset: str | None = None, progress: Callable[[str], None] = lambda _: None) -> SimulationResult:
    """Score `rows` generated rows in batches, then send true labels for `label_share` of them.

    `dataset` names the example whose generator fits the model (default: the one the model is named after).
    """
    chosen = dataset or next((d for d in DATASETS if d in model), DATASETS[0])
    frame, target = generated_rows(chosen, rows, drift, seed)
    session = requests.Session()
    session.headers["x-functions-key"] = key
    ids: list[str] = []
    versions: set[int] = set()
    features = [c for c in frame.columns if c != target]
    for start in range(0, len(frame), BATCH):
        batch = frame.iloc[start:start + BATCH]
        body = {"dataframe_split": {"columns": features, "data": _rows(batch[features])}}
        answer = _ok(session.post(f"{url}/models/{model}/score", json=body, timeout=60))
        ids += answer["prediction_ids"]
        versions.add(int(answer["model"]["version"]))
        progress(f"scored {min(start + BATCH, len(frame))}/{len(frame)}")
    rng = np.random.default_rng(seed)
    labelled = [i for i in range(len(ids)) if rng.uniform() < label_share]
    totals = {"accepted": 0, "duplicates": 0, "replaced": 0, "unmatched": 0}
    for start in range(0, len(labelled), 1000):
        labels = [{"prediction_id": ids[i], "label": _value(frame[target].iloc[i])}
                  for i in labelled[start:start + 1000]]
        counts = _ok(session.post(f"{url}/models/{model}/feedback", json={"labels": labels}, timeout=60))
        totals = {k: totals[k] + int(counts.get(k, 0)) for k in totals}
    progress(f"sent {len(labelled)} labels")
    return SimulationResult(len(ids), len(labelled), totals, sorted(versions))


def _rows(frame: Any) -> list[list[Any]]:
    return [[_value(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def _value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _ok(response: requests.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.url.split('?')[0]} answered "
                           f"{response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body
