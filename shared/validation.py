"""Decide promote, reject or pending_approval for a challenger, with one reason per check."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shared.spec import HIGHER_IS_BETTER, ComparisonRule, TrainingSpec, comparison_rules

if TYPE_CHECKING:  # onnx_export loads scikit-learn and skl2onnx: not at import, only where a parity check runs
    from shared.onnx_export import ParityReport

Outcome = Literal["promote", "reject", "pending_approval"]


@dataclass(frozen=True)
class Decision:
    """The outcome and one human-readable reason per check, in check order."""

    outcome: Outcome
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def decide(spec: TrainingSpec, challenger_metrics: dict[str, float],
           champion_metrics: dict[str, float] | None, latency_p99_ms: float,
           parity: ParityReport, compared: dict[str, float] | None = None) -> Decision:
    """Apply parity, quality bar, champion comparison and latency budget, then approval mode.

    `compared` is the challenger's metrics on the rows the champion was scored on, when those are
    fewer than the whole holdout (rows the champion trained on are left out of the comparison).
    """
    reasons = list(parity.reasons) or [
        f"{'passed' if parity.passed else 'rejected'}: parity (no details)"]
    if not parity.passed and not any(r.startswith("rejected") for r in reasons):
        reasons.append("rejected: parity check failed")
    reasons += _bar_reasons(spec, challenger_metrics)
    reasons += _champion_reasons(spec, compared or challenger_metrics, champion_metrics, parity.n_classes)
    reasons.append(_latency_reason(spec, latency_p99_ms))
    if any(r.startswith("rejected") for r in reasons):
        return Decision("reject", reasons)
    if spec.approval == "manual":
        return Decision("pending_approval",
                        [*reasons, "pending: approval=manual; every check passed, waiting for "
                                   "a reviewer"])
    return Decision("promote", reasons)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _metric(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _bar_reasons(spec: TrainingSpec, metrics: dict[str, float]) -> list[str]:
    reasons = []
    for name, bound in spec.quality_bar.items():
        value = _metric(metrics, name)
        if value is None:
            reasons.append(f"rejected: {name} was not computed on the holdout (needed by the "
                           "quality bar)")
        elif bound.min is not None:
            ok = value >= bound.min
            reasons.append(f"{'passed' if ok else 'rejected'}: {name} {_fmt(value)} "
                           f"{'>=' if ok else '<'} bar {_fmt(bound.min)}")
        elif bound.max is not None:
            ok = value <= bound.max
            reasons.append(f"{'passed' if ok else 'rejected'}: {name} {_fmt(value)} "
                           f"{'<=' if ok else '>'} bar {_fmt(bound.max)}")
    if not spec.quality_bar:
        reasons.append("passed: no quality bar in the spec")
    return reasons


def _champion_reasons(spec: TrainingSpec, challenger: dict[str, float],
                      champion: dict[str, float] | None, n_classes: int | None) -> list[str]:
    if champion is None:
        return ["no champion: only the quality bar applies"]
    reasons = []
    for name, rule in comparison_rules(spec, n_classes).items():
        new, old = _metric(challenger, name), _metric(champion, name)
        if new is None:
            reasons.append(f"rejected: challenger has no {name} to compare with the champion")
        elif old is None:
            reasons.append(f"skipped: champion has no {name}; comparison on {name} not applied")
        else:
            reasons.append(_compare(name, new, old, rule))
    return reasons


def _compare(name: str, new: float, old: float, rule: ComparisonRule) -> str:
    # gain > 0 means the challenger is better, whatever the metric's direction.
    gain = new - old if name in HIGHER_IS_BETTER else old - new
    head = f"{name} {_fmt(new)}"
    if rule.min_improvement is not None:
        if gain >= rule.min_improvement:
            return (f"passed: {head} improves on champion {_fmt(old)} by at least "
                    f"{_fmt(rule.min_improvement)}")
        return (f"rejected: {head} improves on champion {_fmt(old)} by less than "
                f"{_fmt(rule.min_improvement)}")
    allowed = rule.max_regression or 0.0
    if gain >= -allowed:
        return f"passed: {head} vs champion {_fmt(old)} (allowed regression {_fmt(allowed)})"
    return f"rejected: {head} worse than champion {_fmt(old)} by more than {_fmt(allowed)}"


def _latency_reason(spec: TrainingSpec, p99_ms: float) -> str:
    budget = spec.latency_budget_ms
    if not math.isfinite(p99_ms):
        return f"rejected: latency p99 was not measured (budget {_fmt(budget)} ms)"
    if p99_ms <= budget:
        return f"passed: latency p99 {p99_ms:.3g} ms <= budget {_fmt(budget)} ms"
    return f"rejected: latency p99 {p99_ms:.3g} ms > budget {_fmt(budget)} ms"
