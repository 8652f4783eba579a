"""Per-feature profile of a training dataset: the baseline that drift (PSI) is measured against.

Numeric histograms use explicit interior cut points `bin_edges` [e1..ek] and k+1 right-closed
bins: (-inf, e1], (e1, e2], ..., (ek, +inf). Bucket new data the same way with
numpy.searchsorted(bin_edges, x, side="left"); nulls are counted apart, never binned.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from shared.spec import TrainingSpec
from shared.training import category_strings

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10
TOP_CATEGORIES = 20
OTHER = "__other__"


def profile_dataset(df: pd.DataFrame, spec: TrainingSpec) -> dict[str, Any]:
    """JSON-serialisable profile of every feature and the target."""
    features = {}
    for feat in spec.features:
        if feat.kind == "numeric":
            features[feat.name] = numeric_profile(df[feat.name])
        else:
            features[feat.name] = categorical_profile(df[feat.name])
    target = (numeric_profile(df[spec.target]) if spec.task == "regression"
              else categorical_profile(df[spec.target], top=None))
    return {
        "rows": len(df),
        "binning": "right-closed; bins (-inf, e1], (e1, e2], ..., (ek, +inf) for "
                   "bin_edges [e1..ek]; nulls excluded",
        "features": features,
        "target": {"name": spec.target, **target},
    }


def numeric_profile(column: pd.Series) -> dict[str, Any]:
    """count, nulls, mean, std (ddof=0), min, max, quantiles, and a decile histogram."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    present = values[~np.isnan(values)]
    profile: dict[str, Any] = {"kind": "numeric", "count": int(present.size),
                               "nulls": int(values.size - present.size)}
    if present.size == 0:
        return {**profile, "mean": None, "std": None, "min": None, "max": None,
                "quantiles": {}, "bin_edges": [], "bin_counts": []}
    edges = histogram_edges(present)
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    return {
        **profile,
        "mean": _num(present.mean()),
        "std": _num(present.std()),
        "min": _num(present.min()),
        "max": _num(present.max()),
        "quantiles": {f"{q:g}": _num(np.quantile(present, q)) for q in QUANTILES},
        "bin_edges": [_num(e) for e in edges],
        "bin_counts": [int(c) for c in counts],
    }


def histogram_edges(present: np.ndarray, bins: int = BINS) -> list[float]:
    """Interior cut points at the deciles, deduplicated (a constant column has one edge)."""
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({float(c) for c in cuts})


def categorical_profile(column: pd.Series, top: int | None = TOP_CATEGORIES) -> dict[str, Any]:
    """Counts of the top categories (the rest under "__other__") and nulls."""
    values = pd.Series(category_strings(column), dtype=object)
    counts = values.dropna().value_counts()
    # Ties in frequency are ordered by name so the profile is deterministic.
    ordered = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
    kept = ordered if top is None else ordered[:top]
    result = {str(k): int(v) for k, v in kept}
    rest = sum(int(v) for _, v in ordered[len(kept):])
    if rest:
        result[OTHER] = rest
    return {"kind": "categorical", "count": int(counts.sum()), "nulls": int(values.isna().sum()),
            "distinct": len(ordered), "counts": result}


def _num(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
