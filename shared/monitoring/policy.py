"""Whether a monitoring window retrains the model: triggers, then the guards against retraining storms.

Pure: the caller gathers the facts (this window, the earlier reports, labels) and records the decision,
retrain or not, with every reason in the monitoring report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.spec import RetrainPolicy


@dataclass(frozen=True)
class PastWindow:
    """What an earlier report of the same model decided."""

    window_end: datetime
    dataset_drift: bool | None
    retrained_at: datetime | None  # when it started a retraining, if it did


@dataclass(frozen=True)
class WindowFacts:
    """This window, as the policy needs it."""

    now: datetime
    dataset_drift: bool | None  # None: insufficient data
    below_bar: list[str]  # "roc_auc 0.71 < min 0.8" per live metric under the quality bar
    labels: int  # labelled rows in the window
    new_labelled_rows: int  # labelled production rows since the champion was trained


@dataclass(frozen=True)
class Decision:
    retrain: bool
    trigger: str | None
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "trigger": self.trigger, "reasons": self.reasons}


def decide(policy: RetrainPolicy, facts: WindowFacts, past: list[PastWindow]) -> Decision:
    """Retrain only when a trigger fires and every guard allows it; `past` is oldest first."""
    trigger, reasons = _trigger(policy, facts, past)
    if trigger is None:
        return Decision(False, None, reasons)
    blocked = _guards(policy, facts, past, drift_only=trigger == "drift" and facts.labels == 0)
    if blocked:
        return Decision(False, trigger, [*reasons, *(f"{b}: not retrained" for b in blocked)])
    return Decision(True, trigger, [*reasons, "guards passed: retraining"])


def _trigger(policy: RetrainPolicy, facts: WindowFacts, past: list[PastWindow]) -> tuple[str | None, list[str]]:
    recent = [w.dataset_drift for w in past[-(policy.of_windows - 1):]] if policy.of_windows > 1 else []
    drifted = sum(1 for d in [*recent, facts.dataset_drift] if d)
    seen = len(recent) + 1
    drift = f"dataset drift in {drifted}/{seen} of the last {policy.of_windows} windows"
    if facts.below_bar and facts.labels >= policy.min_labels:
        return "performance", [f"live metric below the quality bar ({'; '.join(facts.below_bar)}) on "
                               f"{facts.labels} labels", drift]
    reasons = [drift + (f" (needs {policy.drift_windows})" if drifted < policy.drift_windows else "")]
    if facts.below_bar:
        reasons.append(f"live metric below the bar ({'; '.join(facts.below_bar)}) but only {facts.labels} "
                       f"labels (needs {policy.min_labels})")
    if drifted >= policy.drift_windows:
        return "drift", reasons
    return None, reasons


def _guards(policy: RetrainPolicy, facts: WindowFacts, past: list[PastWindow], *, drift_only: bool) -> list[str]:
    blocked: list[str] = []
    if not policy.enabled:
        blocked.append("automatic retraining is off (monitoring.retrain.enabled: false)")
    retrains = [w.retrained_at for w in past if w.retrained_at is not None]
    if retrains and facts.now < max(retrains) + timedelta(hours=policy.cooldown_hours):
        until = max(retrains) + timedelta(hours=policy.cooldown_hours)
        blocked.append(f"cooldown until {until.isoformat()}")
    today = [t for t in retrains if t > facts.now - timedelta(days=1)]
    if len(today) >= policy.max_per_day:
        blocked.append(f"{len(today)} automatic retrainings in the last 24 h (max_per_day {policy.max_per_day})")
    if not drift_only and facts.new_labelled_rows < policy.min_new_rows:
        blocked.append(f"only {facts.new_labelled_rows} new labelled rows since the last training "
                       f"(min_new_rows {policy.min_new_rows})")
    return blocked
