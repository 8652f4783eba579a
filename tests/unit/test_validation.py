"""decide(): outcome and a spelled-out reason for every check."""
from __future__ import annotations

import json
from typing import Any

from shared.onnx_export import ParityReport
from shared.spec import TrainingSpec, parse_spec
from shared.validation import decide


def classification_spec(**changes: Any) -> TrainingSpec:
    data: dict[str, Any] = {
        "name": "churn", "task": "classification", "target": "y",
        "features": [{"name": "x", "kind": "numeric"}],
        "estimator": {"type": "logistic_regression"},
        "quality_bar": {"roc_auc": {"min": 0.85}, "accuracy": {"min": 0.9}},
        "latency_budget_ms": 10,
    }
    data.update(changes)
    return parse_spec(json.dumps(data), "spec.json")


def regression_spec(**changes: Any) -> TrainingSpec:
    data: dict[str, Any] = {
        "name": "spend", "task": "regression", "target": "y",
        "features": [{"name": "x", "kind": "numeric"}],
        "estimator": {"type": "ridge"},
        "quality_bar": {"rmse": {"max": 60}},
        "comparison": {"rmse": {"max_regression": 0.5}},
    }
    data.update(changes)
    return parse_spec(json.dumps(data), "spec.json")


def parity(passed: bool = True, n_classes: int | None = 2) -> ParityReport:
    verdict = "passed" if passed else "rejected"
    return ParityReport(
        task="classification" if n_classes else "regression", rows=100,
        max_abs_diff=1e-7 if passed else 0.02, max_rel_diff=None, label_agreement=1.0,
        near_tie_disagreements=0, n_classes=n_classes, threshold=1e-5, min_label_agreement=1.0,
        passed=passed, reasons=[f"{verdict}: parity max probability diff "
                                f"{'1e-07 <=' if passed else '0.02 >'} 1e-05 (rows=100)"])


GOOD = {"roc_auc": 0.93, "accuracy": 0.95, "f1": 0.9}


def test_all_checks_pass_without_champion_promotes_with_every_reason() -> None:
    decision = decide(classification_spec(), GOOD, None, 3.2, parity())
    assert decision.outcome == "promote"
    assert decision.reasons == [
        "passed: parity max probability diff 1e-07 <= 1e-05 (rows=100)",
        "passed: roc_auc 0.93 >= bar 0.85",
        "passed: accuracy 0.95 >= bar 0.9",
        "no champion: only the quality bar applies",
        "passed: latency p99 3.2 ms <= budget 10 ms",
    ]
    json.dumps(decision.to_dict())


def test_metric_below_the_bar_rejects() -> None:
    decision = decide(classification_spec(), {**GOOD, "roc_auc": 0.71}, None, 3.0, parity())
    assert decision.outcome == "reject"
    assert "rejected: roc_auc 0.71 < bar 0.85" in decision.reasons
    assert "passed: accuracy 0.95 >= bar 0.9" in decision.reasons  # other checks still listed


def test_missing_bar_metric_rejects() -> None:
    decision = decide(classification_spec(), {"accuracy": 0.95}, None, 3.0, parity())
    assert decision.outcome == "reject"
    assert any(r.startswith("rejected: roc_auc was not computed") for r in decision.reasons)


def test_worse_than_champion_by_more_than_allowed_rejects() -> None:
    spec = regression_spec()
    decision = decide(spec, {"rmse": 41.2}, {"rmse": 39.8}, 2.0, parity(n_classes=None))
    assert decision.outcome == "reject"
    assert "rejected: rmse 41.2 worse than champion 39.8 by more than 0.5" in decision.reasons
    assert "passed: rmse 41.2 <= bar 60" in decision.reasons


def test_within_allowed_regression_passes() -> None:
    decision = decide(regression_spec(), {"rmse": 40.1}, {"rmse": 39.8}, 2.0,
                      parity(n_classes=None))
    assert decision.outcome == "promote"
    assert "passed: rmse 40.1 vs champion 39.8 (allowed regression 0.5)" in decision.reasons


def test_min_improvement_is_required_when_configured() -> None:
    spec = classification_spec(comparison={"roc_auc": {"min_improvement": 0.02}})
    small = decide(spec, {**GOOD, "roc_auc": 0.93}, {"roc_auc": 0.92}, 1.0, parity())
    assert small.outcome == "reject"
    assert "rejected: roc_auc 0.93 improves on champion 0.92 by less than 0.02" in small.reasons
    big = decide(spec, {**GOOD, "roc_auc": 0.95}, {"roc_auc": 0.92}, 1.0, parity())
    assert big.outcome == "promote"


def test_default_comparison_uses_roc_auc_for_binary_and_accuracy_for_multiclass() -> None:
    spec = classification_spec()
    champion = {"roc_auc": 0.94, "accuracy": 0.96}
    binary = decide(spec, GOOD, champion, 1.0, parity(n_classes=2))
    assert "rejected: roc_auc 0.93 worse than champion 0.94 by more than 0" in binary.reasons
    multiclass = decide(spec, GOOD, champion, 1.0, parity(n_classes=3))
    assert "rejected: accuracy 0.95 worse than champion 0.96 by more than 0" in multiclass.reasons
    assert not any("roc_auc" in r and "champion" in r for r in multiclass.reasons)


def test_champion_without_the_metric_skips_that_comparison() -> None:
    decision = decide(regression_spec(), {"rmse": 40.0}, {"mae": 30.0}, 1.0,
                      parity(n_classes=None))
    assert decision.outcome == "promote"
    assert "skipped: champion has no rmse; comparison on rmse not applied" in decision.reasons


def test_latency_over_budget_rejects() -> None:
    decision = decide(classification_spec(), GOOD, None, 12.3, parity())
    assert decision.outcome == "reject"
    assert "rejected: latency p99 12.3 ms > budget 10 ms" in decision.reasons


def test_failed_parity_rejects_even_when_metrics_are_good() -> None:
    decision = decide(classification_spec(), GOOD, None, 1.0, parity(passed=False))
    assert decision.outcome == "reject"
    assert decision.reasons[0] == "rejected: parity max probability diff 0.02 > 1e-05 (rows=100)"


def test_manual_approval_waits_when_everything_passes() -> None:
    spec = classification_spec(approval="manual")
    decision = decide(spec, GOOD, None, 1.0, parity())
    assert decision.outcome == "pending_approval"
    assert decision.reasons[-1].startswith("pending: approval=manual")
    rejected = decide(spec, {**GOOD, "accuracy": 0.5}, None, 1.0, parity())
    assert rejected.outcome == "reject"  # manual approval never rescues a failed check
