"""Pure drift statistics: normalised Wasserstein, PSI, Jensen-Shannon distance and the unseen share.

Each returns a finite float (JSON-safe). With nothing to compare (an empty live or reference side) they
return 0.0: no evidence is not drift, and callers gate every verdict on a minimum row count anyway.
Thresholds and their defaults live in the spec (shared.spec.MonitoringSpec), not here.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]  # no stubs in requirements-dev
from scipy.stats import ks_2samp, wasserstein_distance  # type: ignore[import-untyped]

Counts = Sequence[float] | np.ndarray

# The smallest reference spread the Wasserstein distance is divided by: a constant training feature
# (std 0) would otherwise turn any live movement into infinity. Evidently uses the same floor
# (wasserstein_distance_norm: max(std(reference), 0.001)).
STD_FLOOR = 0.001

# A bin with no rows on one side has ln(0) in its PSI term; its proportion is raised to PSI_EPSILON
# first, the usual fix (a bin empty on one side then adds about (p - 1e-4) * ln(p / 1e-4), e.g. 0.69
# for p = 0.1, so it still counts as drift). Proportions, not counts: the result does not depend on
# the sample sizes.
PSI_EPSILON = 1e-4


def normalised_wasserstein(live: np.ndarray, reference: np.ndarray, reference_std: float | None) -> float:
    """Wasserstein-1 distance between the two samples (NaN dropped) in units of the reference std."""
    live_values = _finite(live)
    reference_values = _finite(reference)
    if live_values.size == 0 or reference_values.size == 0:
        return 0.0
    spread = reference_std if reference_std is not None and math.isfinite(reference_std) else 0.0
    distance = float(wasserstein_distance(live_values, reference_values)) / max(spread, STD_FLOOR)
    return distance if math.isfinite(distance) else 0.0


def psi(expected_counts: Counts, actual_counts: Counts, eps: float = PSI_EPSILON) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over bin proportions, empty bins raised to eps."""
    expected = np.asarray(expected_counts, dtype=np.float64)
    actual = np.asarray(actual_counts, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f"psi needs counts over the same bins: expected has {expected.size}, actual {actual.size}")
    if expected.sum() <= 0 or actual.sum() <= 0:
        return 0.0
    e = np.clip(expected / expected.sum(), eps, None)
    a = np.clip(actual / actual.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p_counts: Counts, q_counts: Counts) -> float:
    """Jensen-Shannon distance (the square root of the divergence) in base 2: 0 identical, 1 disjoint."""
    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"jensen_shannon needs counts over the same categories: {p.size} vs {q.size}")
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    # jensenshannon normalises the counts itself; rounding can leave a tiny negative under the root (NaN)
    distance = float(jensenshannon(p, q, base=2.0))
    return min(distance, 1.0) if math.isfinite(distance) else 0.0


def unseen_share(counts: Mapping[str, int], known: Collection[str]) -> float:
    """Share of the counted (non-null) values whose category is not in `known`."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    unseen = sum(n for category, n in counts.items() if category not in known)
    return unseen / total


def _finite(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def ks_pvalue(live: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy.stats.ks_2samp); 1.0 when a side is empty.

    Used as a gate, not a drift score: in a small window an effect size like the normalised
    Wasserstein distance exceeds 0.1 from sampling noise alone; requiring the difference to be
    significant too keeps stationary traffic quiet (in a large window every real shift is).
    """
    a = np.asarray(live, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return 1.0
    return float(ks_2samp(a, b).pvalue)
