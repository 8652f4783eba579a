"""Feature, prediction and dataset drift of a window of live traffic against the champion's training data.

DriftAccumulator folds LogChunks (shared.monitoring.window) into bounded state, so a window of any size
costs the same memory: per numeric feature the live counts on the training profile's bins (for PSI),
a seeded reservoir sample (for the Wasserstein distance), nulls and out-of-range values; per categorical
feature the category counts (Jensen-Shannon distance, unseen share) and nulls. result() turns the state
into a DriftResult; it may be called again after more chunks.

Verdicts (thresholds from the spec's `monitoring` block): a numeric feature drifts if its normalised
Wasserstein distance or its PSI reaches its threshold, a categorical one if its Jensen-Shannon distance
does; the dataset drifts if the share of drifted features reaches drift_share (the denominator is every
feature of the spec). A window of fewer than min_rows rows, or a feature with fewer than min_rows
non-null values, is reported with its statistics but is never flagged: too few rows, too much noise.

Prediction drift compares the live outputs with the holdout outputs stored at validation (see
holdout_output_profile for the format); it is reported beside dataset drift and does not count in it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.monitoring.stats import jensen_shannon, ks_pvalue, normalised_wasserstein, psi, unseen_share
from shared.monitoring.window import LogChunk, category_column, numeric_column
from shared.profile import OTHER, categorical_profile, numeric_profile
from shared.spec import FeatureSpec, MonitoringSpec, TrainingSpec

Status = Literal["ok", "insufficient_data"]
PredictionStatus = Literal["ok", "insufficient_data", "no_reference"]

RESERVOIR_SIZE = 20_000  # live values kept per numeric feature for the Wasserstein distance
REFERENCE_SAMPLE_SIZE = 20_000  # training values per numeric feature (reference_sample)
HOLDOUT_SAMPLE_SIZE = 2_000  # holdout outputs stored with their profile: the holdout is rarely larger
QUANTILE_SAMPLE_POINTS = 1_000  # points of the pseudo-sample rebuilt from a profile's quantiles
MAX_TRACKED_CATEGORIES = 10_000  # live categories counted by name; the rest only as unseen "__other__"
LIVE_CATEGORIES = 20  # most frequent live categories a report lists for drawing
HOLDOUT_FORMAT = 1
SIGNIFICANCE = 0.01  # KS p-value under which a numeric shift is real rather than sampling noise


# -- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistic:
    """One drift statistic with its threshold; drifted is False whenever the window was not judged."""

    name: str
    value: float
    threshold: float
    drifted: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "drifted": self.drifted}


@dataclass(frozen=True)
class FeatureDrift:
    """Drift and data quality of one feature over the window."""

    kind: str
    status: Status
    statistics: tuple[Statistic, ...]
    present: int  # non-null values
    nulls: int
    null_rate: float
    out_of_range: int | None = None  # numeric: present values outside the spec's min/max
    out_of_range_rate: float | None = None
    unseen_share: float | None = None  # categorical: share of present values outside the known categories
    # the window's own distribution, for a reader to draw next to the training one: counts on the
    # training profile's bins (numeric) or of the most frequent categories (categorical)
    live_counts: tuple[int, ...] | None = None
    live_categories: tuple[tuple[str, int], ...] | None = None

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.statistics)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind, "status": self.status, "statistics": [s.to_json() for s in self.statistics],
            "drifted": self.drifted, "present": self.present, "nulls": self.nulls, "null_rate": self.null_rate,
        }
        if self.kind == "numeric":
            body["out_of_range_rate"] = self.out_of_range_rate
            if self.live_counts is not None:
                body["live_bin_counts"] = list(self.live_counts)
        else:
            body["unseen_share"] = self.unseen_share
            if self.live_categories is not None:
                body["live_counts"] = dict(self.live_categories)
        return body


@dataclass(frozen=True)
class PredictionDrift:
    """Live model outputs against the holdout outputs; drifted is None when not judged."""

    status: PredictionStatus
    statistics: tuple[Statistic, ...] = ()
    drifted: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "statistics": [s.to_json() for s in self.statistics],
                "drifted": self.drifted}


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window; to_json() is JSON-safe (every float finite)."""

    status: Status
    rows: int
    min_rows: int
    dataset_drift: bool | None  # None: insufficient data
    drift_share: float  # share of the spec's features that drifted
    drift_share_threshold: float
    features: dict[str, FeatureDrift]
    prediction_drift: PredictionDrift

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, feature in self.features.items() if feature.drifted]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "rows": self.rows, "min_rows": self.min_rows,
            "dataset_drift": self.dataset_drift, "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold, "drifted_features": self.drifted_features,
            "features": {name: f.to_json() for name, f in self.features.items()},
            "prediction_drift": self.prediction_drift.to_json(),
            "data_quality": self._data_quality(),
        }

    def _data_quality(self) -> dict[str, Any]:
        features = self.features.values()
        cells = self.rows * len(self.features)
        numeric = [f for f in features if f.kind == "numeric"]
        numeric_present = sum(f.present for f in numeric)
        out_of_range = sum(f.out_of_range or 0 for f in numeric)
        return {
            "null_rate": _rate(sum(f.nulls for f in features), cells),
            "out_of_range_rate": _rate(out_of_range, numeric_present),
            "features": {name: _quality(f) for name, f in self.features.items()},
        }


def _quality(feature: FeatureDrift) -> dict[str, Any]:
    summary: dict[str, Any] = {"nulls": feature.nulls, "null_rate": feature.null_rate}
    if feature.kind == "numeric":
        summary["out_of_range_rate"] = feature.out_of_range_rate
    else:
        summary["unseen_share"] = feature.unseen_share
    return summary


# -- bounded state ----------------------------------------------------------------------------------


class Reservoir:
    """A uniform sample of at most `size` values of a stream (Algorithm R), the same however it is chunked.

    Exactly one uniform draw per value past the first `size`, in stream order, so chunk boundaries do not
    change which values are kept.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self._values = np.empty(size, dtype=np.float64)
        self._filled = 0
        self._seen = 0
        self._rng = rng

    def add(self, values: np.ndarray) -> None:
        size = self._values.size
        take = min(size - self._filled, values.size)
        self._values[self._filled:self._filled + take] = values[:take]
        self._filled += take
        rest = values[take:]
        if rest.size:
            # value number j (0-based over the stream) replaces slot floor(u * (j + 1)) if that is < size
            positions = self._seen + take + np.arange(rest.size, dtype=np.float64)
            slots = (self._rng.random(rest.size) * (positions + 1)).astype(np.int64)
            hit = np.flatnonzero(slots < size)
            # when several values of this chunk hit one slot, the last one is what a sequential pass keeps
            _, last_reversed = np.unique(slots[hit][::-1], return_index=True)
            chosen = hit[hit.size - 1 - last_reversed]
            self._values[slots[chosen]] = rest[chosen]
        self._seen += values.size

    def sample(self) -> np.ndarray:
        return self._values[:self._filled]


class NumericTracker:
    """Live bins, reservoir, nulls and out-of-range count of one numeric stream against its reference."""

    def __init__(self, profile: Mapping[str, Any], reference: np.ndarray, rng: np.random.Generator,
                 size: int, bounds: tuple[float | None, float | None] = (None, None)) -> None:
        self.edges = np.asarray(profile.get("bin_edges") or [], dtype=np.float64)
        counts = list(profile.get("bin_counts") or [])
        self.expected = np.asarray(counts if len(counts) == self.edges.size + 1 else [0] * (self.edges.size + 1),
                                   dtype=np.float64)
        self.reference = reference
        self.reference_std = _optional_float(profile.get("std"))
        self.bounds = bounds
        self.live = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.reservoir = Reservoir(size, rng)
        self.present = self.nulls = self.out_of_range = 0

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        present = values[finite]
        self.nulls += int(values.size - present.size)
        self.present += int(present.size)
        self.live += np.bincount(np.searchsorted(self.edges, present, side="left"), minlength=self.live.size)
        self.reservoir.add(present)
        low, high = self.bounds
        if low is not None:
            self.out_of_range += int(np.count_nonzero(present < low))
        if high is not None:
            self.out_of_range += int(np.count_nonzero(present > high))

    def statistics(self, monitoring: MonitoringSpec, judged: bool) -> tuple[Statistic, ...]:
        live = self.reservoir.sample()
        wasserstein = normalised_wasserstein(live, self.reference, self.reference_std)
        stability = psi(self.expected, self.live)
        # An effect size over its threshold counts only when the shift is also significant (see ks_pvalue).
        significant = judged and ks_pvalue(live, self.reference) < SIGNIFICANCE
        return (
            _statistic("wasserstein_normalised", wasserstein, monitoring.wasserstein_threshold, significant),
            _statistic("psi", stability, monitoring.psi_threshold, significant),
        )


class CategoryTracker:
    """Live category counts of one categorical stream against the reference counts."""

    def __init__(self, reference: Mapping[str, int], known: Iterable[str]) -> None:
        self.reference = {str(k): int(v) for k, v in reference.items()}
        self.known = frozenset(known)
        # reference and known categories are always counted by name, however many strangers come first
        self.counts: Counter[str] = Counter({k: 0 for k in (*self.reference, *self.known)})
        self.untracked = 0  # values of categories beyond MAX_TRACKED_CATEGORIES (all unseen)
        self.nulls = 0

    @property
    def present(self) -> int:
        return sum(self.counts.values()) + self.untracked

    def add(self, values: Iterable[str | None]) -> None:
        self.add_counts(Counter(values))

    def add_counts(self, counted: Counter[str | None]) -> None:
        self.nulls += counted.pop(None, 0)
        for category, n in counted.items():
            if category is None:
                continue
            if category in self.counts or len(self.counts) < MAX_TRACKED_CATEGORIES:
                self.counts[category] += n
            else:
                self.untracked += n

    def distance(self) -> float:
        """Jensen-Shannon distance on the reference's categories, live strangers pooled into "__other__"."""
        keys = [*self.reference, *([] if OTHER in self.reference else [OTHER])]
        index = {k: i for i, k in enumerate(keys)}
        live = np.zeros(len(keys), dtype=np.float64)
        for category, n in self.counts.items():
            live[index.get(category, index[OTHER])] += n
        live[index[OTHER]] += self.untracked
        expected = np.array([self.reference.get(k, 0) for k in keys], dtype=np.float64)
        return jensen_shannon(expected, live)

    def unseen(self) -> float:
        share = unseen_share(self.counts, self.known)
        present = self.present
        return (share * (present - self.untracked) + self.untracked) / present if present else 0.0


# -- the accumulator --------------------------------------------------------------------------------


class DriftAccumulator:
    """Folds LogChunks of one window into drift state; bounded memory, deterministic for a given seed.

    profile: the champion's training profile (shared.profile.profile_dataset). reference_sample: numeric
    feature -> training values (reference_sample_from_frame reads them from the prepared data); a numeric
    feature without one is compared with a pseudo-sample rebuilt from its profile's quantiles
    (quantile_sample), which is coarser in the tails. holdout_outputs: holdout_output_profile() of the
    champion, or None to skip prediction drift.
    """

    def __init__(self, spec: TrainingSpec, profile: Mapping[str, Any],
                 reference_sample: Mapping[str, np.ndarray] | None = None,
                 holdout_outputs: Mapping[str, Any] | None = None, seed: int = 0,
                 *, reservoir_size: int = RESERVOIR_SIZE) -> None:
        self.spec = spec
        self.rows = 0
        profiles: Mapping[str, Any] = profile.get("features") or {}
        seeds = np.random.SeedSequence(seed).spawn(len(spec.features) + 1)
        # one generator per stream, so chunk boundaries never change which draw a value gets
        self.numeric = {
            f.name: _feature_tracker(f, profiles.get(f.name) or {}, reference_sample, np.random.default_rng(s),
                                     reservoir_size)
            for f, s in zip(spec.features, seeds, strict=False) if f.kind == "numeric"
        }
        self.categorical = {
            f.name: CategoryTracker((profiles.get(f.name) or {}).get("counts") or {},
                                    _known(f, profiles.get(f.name) or {}))
            for f in spec.features if f.kind == "categorical"
        }
        self.outputs = _OutputTracker.create(spec, holdout_outputs, np.random.default_rng(seeds[-1]),
                                             reservoir_size)

    def add(self, chunk: LogChunk) -> None:
        """Fold one chunk in; features missing from the chunk count as null."""
        self.rows += chunk.rows
        for name, tracker in self.numeric.items():
            tracker.add(_numeric(chunk.features.get(name), chunk.rows))
        for name, categories in self.categorical.items():
            categories.add(_categories(chunk.features.get(name), chunk.rows))
        if self.outputs is not None:
            self.outputs.add(chunk)

    def result(self) -> DriftResult:
        """The drift of everything added so far."""
        monitoring = self.spec.monitoring
        judged = self.rows >= monitoring.min_rows
        features = {f.name: self._feature(f, judged) for f in self.spec.features}
        share = sum(f.drifted for f in features.values()) / len(features)
        prediction = (PredictionDrift("no_reference") if self.outputs is None
                      else self.outputs.result(monitoring, judged))
        return DriftResult(
            status="ok" if judged else "insufficient_data", rows=self.rows, min_rows=monitoring.min_rows,
            dataset_drift=share >= monitoring.drift_share if judged else None, drift_share=share,
            drift_share_threshold=monitoring.drift_share, features=features, prediction_drift=prediction,
        )

    def _feature(self, feature: FeatureSpec, judged: bool) -> FeatureDrift:
        monitoring = self.spec.monitoring
        if feature.kind == "numeric":
            numeric = self.numeric[feature.name]
            ok = judged and numeric.present >= monitoring.min_rows
            return FeatureDrift(
                kind="numeric", status=_status(ok), statistics=numeric.statistics(monitoring, ok),
                present=numeric.present, nulls=numeric.nulls, null_rate=_rate(numeric.nulls, self.rows),
                out_of_range=numeric.out_of_range, out_of_range_rate=_rate(numeric.out_of_range, numeric.present),
                live_counts=tuple(int(n) for n in numeric.live),
            )
        categories = self.categorical[feature.name]
        ok = judged and categories.present >= monitoring.min_rows
        distance = _statistic("jensen_shannon", categories.distance(), monitoring.jensen_shannon_threshold, ok)
        return FeatureDrift(
            kind="categorical", status=_status(ok), statistics=(distance,), present=categories.present,
            nulls=categories.nulls, null_rate=_rate(categories.nulls, self.rows), unseen_share=categories.unseen(),
            live_categories=tuple((k, n) for k, n in categories.counts.most_common(LIVE_CATEGORIES) if n),
        )


def _feature_tracker(feature: FeatureSpec, profile: Mapping[str, Any],
                     reference_sample: Mapping[str, np.ndarray] | None, rng: np.random.Generator,
                     size: int) -> NumericTracker:
    sample = None if reference_sample is None else reference_sample.get(feature.name)
    reference = quantile_sample(profile) if sample is None else np.asarray(sample, dtype=np.float64)
    return NumericTracker(profile, reference, rng, size, (feature.min, feature.max))


def _known(feature: FeatureSpec, profile: Mapping[str, Any]) -> set[str]:
    if feature.allowed is not None:
        return set(feature.allowed)
    return {str(k) for k in (profile.get("counts") or {}) if k != OTHER}


def _numeric(column: np.ndarray | None, rows: int) -> np.ndarray:
    if column is None:
        return np.full(rows, np.nan)
    if column.dtype.kind == "f":
        return column
    return numeric_column(column.tolist())  # a column typed categorical (inferred kinds): its numbers only


def _categories(column: np.ndarray | None, rows: int) -> list[str | None]:
    if column is None:
        return [None] * rows
    if column.dtype.kind == "f":  # a column typed numeric (inferred kinds, e.g. all null): NaN is None
        return list(category_column(column.tolist()).tolist())
    return list(column.tolist())


# -- prediction drift -------------------------------------------------------------------------------


class _OutputTracker:
    """Live outputs against holdout_output_profile(): predictions (regression) or labels and p(positive)."""

    def __init__(self, holdout: Mapping[str, Any], values: NumericTracker | None,
                 labels: CategoryTracker | None, positive: str | None) -> None:
        self.values = values  # regression predictions, or the positive-class probability of a binary model
        self.labels = labels
        self.positive = positive
        self.holdout = holdout

    @classmethod
    def create(cls, spec: TrainingSpec, holdout: Mapping[str, Any] | None, rng: np.random.Generator,
               size: int) -> _OutputTracker | None:
        if not holdout or holdout.get("task") != spec.task:
            return None
        if spec.task == "regression":
            return cls(holdout, _holdout_tracker(holdout.get("predictions"), rng, size), None, None)
        labels = holdout.get("labels") or {}
        known = [str(c) for c in holdout.get("classes") or labels.get("counts") or {}]
        tracker = CategoryTracker(labels.get("counts") or {}, known)
        positive = holdout.get("positive_class")
        probability = _holdout_tracker(holdout.get("positive_probability"), rng, size)
        return cls(holdout, probability, tracker, str(positive) if positive is not None else None)

    def add(self, chunk: LogChunk) -> None:
        if self.labels is not None:
            self.labels.add_counts(label_counts(chunk.predictions))
            if self.values is not None:
                self.values.add(self._positive_probability(chunk))
        elif self.values is not None:
            self.values.add(_numeric(chunk.predictions, chunk.rows))

    def _positive_probability(self, chunk: LogChunk) -> np.ndarray:
        if chunk.probabilities is None or self.positive not in chunk.classes:
            return np.full(chunk.rows, np.nan)
        return chunk.probabilities[:, chunk.classes.index(self.positive)]

    def result(self, monitoring: MonitoringSpec, judged: bool) -> PredictionDrift:
        statistics: list[Statistic] = []
        if self.labels is not None:
            statistics.append(_statistic("labels_jensen_shannon", self.labels.distance(),
                                         monitoring.jensen_shannon_threshold, judged))
        if self.values is not None:
            prefix = "positive_probability" if self.labels is not None else "predictions"
            statistics.extend(Statistic(f"{prefix}_{s.name}", s.value, s.threshold, s.drifted)
                              for s in self.values.statistics(monitoring, judged))
        return PredictionDrift("ok" if judged else "insufficient_data", tuple(statistics),
                               any(s.drifted for s in statistics) if judged else None)


def label_counts(predictions: np.ndarray) -> Counter[str | None]:
    """Predicted labels counted as category names (1.0 -> "1"), None for a missing prediction."""
    if predictions.dtype.kind != "f":
        return Counter(category_column(predictions.tolist()).tolist())
    finite = np.isfinite(predictions)
    # numeric labels take few values: count them in numpy, name each distinct one once
    values, counts = np.unique(predictions[finite], return_counts=True)
    counted: Counter[str | None] = Counter()
    for name, n in zip(category_column(values.tolist()).tolist(), counts.tolist(), strict=True):
        counted[name] += n
    missing = int(predictions.size - np.count_nonzero(finite))
    if missing:
        counted[None] = missing
    return counted


def _holdout_tracker(profile: Mapping[str, Any] | None, rng: np.random.Generator, size: int) -> NumericTracker | None:
    if not profile:
        return None
    sample = profile.get("sample")
    reference = np.asarray(sample, dtype=np.float64) if sample else quantile_sample(profile)
    return NumericTracker(profile, reference, rng, size)


def holdout_output_profile(task: str, predictions: Sequence[Any] | np.ndarray,
                           probabilities: np.ndarray | None = None, classes: Sequence[Any] | None = None,
                           seed: int = 0) -> dict[str, Any]:
    """The reference for prediction drift, from the champion's outputs on its holdout (JSON-serialisable).

    {"format": 1, "task", "rows", then for regression "predictions": numeric_profile of the predicted
    values plus "sample" (at most HOLDOUT_SAMPLE_SIZE of them); for classification "classes" (as str, the
    model's order), "labels": categorical_profile of the predicted labels (every class), and for a binary
    model with probabilities "positive_class" (classes[-1], sklearn's positive label) and
    "positive_probability": numeric_profile + "sample" of its probability. probabilities: rows x classes.
    """
    profile: dict[str, Any] = {"format": HOLDOUT_FORMAT, "task": task, "rows": len(predictions)}
    if task == "regression":
        values = np.asarray(predictions, dtype=np.float64).reshape(-1)
        return {**profile, "predictions": _sampled_profile(values, seed)}
    names = [str(c) for c in classes or ()]
    labels = pd.Series(category_column(np.asarray(predictions).reshape(-1).tolist()), dtype=object)
    profile.update(classes=names, labels=categorical_profile(labels, top=None))
    if probabilities is not None and len(names) == 2:
        matrix = np.asarray(probabilities, dtype=np.float64).reshape(len(predictions), len(names))
        profile.update(positive_class=names[-1], positive_probability=_sampled_profile(matrix[:, -1], seed))
    return profile


def _sampled_profile(values: np.ndarray, seed: int) -> dict[str, Any]:
    present = values[np.isfinite(values)]
    sample = bounded_sample(present, HOLDOUT_SAMPLE_SIZE, seed)
    return {**numeric_profile(pd.Series(values)), "sample": [float(v) for v in sample]}


# -- references -------------------------------------------------------------------------------------


def reference_sample_from_frame(frame: pd.DataFrame, spec: TrainingSpec, size: int = REFERENCE_SAMPLE_SIZE,
                                seed: int = 0) -> dict[str, np.ndarray]:
    """At most `size` non-null training values per numeric feature (the prepared data), seeded."""
    sample: dict[str, np.ndarray] = {}
    for feature in spec.features:
        if feature.kind == "numeric" and feature.name in frame.columns:
            values = pd.to_numeric(frame[feature.name], errors="coerce").to_numpy(np.float64)
            sample[feature.name] = bounded_sample(values[np.isfinite(values)], size, seed)
    return sample


def bounded_sample(values: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`values` itself if it has at most `size` entries, else `size` of them drawn without replacement."""
    if values.size <= size:
        return values
    return np.random.default_rng(seed).choice(values, size=size, replace=False)


def quantile_sample(profile: Mapping[str, Any], points: int = QUANTILE_SAMPLE_POINTS) -> np.ndarray:
    """A pseudo-sample from a numeric profile: its quantile function (min, quantiles, max) read at evenly
    spaced probabilities, linear in between. Close in the body, coarse in the tails beyond 1% and 99%."""
    low, high = _optional_float(profile.get("min")), _optional_float(profile.get("max"))
    if low is None or high is None:
        return np.empty(0)
    knots = sorted((float(q), float(v)) for q, v in (profile.get("quantiles") or {}).items() if v is not None)
    probabilities = [0.0, *(q for q, _ in knots), 1.0]
    values = [low, *(v for _, v in knots), high]
    return np.interp((np.arange(points) + 0.5) / points, probabilities, values)


# -- helpers ----------------------------------------------------------------------------------------


def _statistic(name: str, value: float, threshold: float, judged: bool) -> Statistic:
    return Statistic(name, value, threshold, judged and value >= threshold)


def _status(judged: bool) -> Status:
    return "ok" if judged else "insufficient_data"


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if np.isfinite(number) else None
