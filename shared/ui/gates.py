"""A version's validation decision as a checklist: each gate with its state and the reasons behind it.

The decision (shared/pipeline.py ValidateStage) keeps its reasons as sentences that start with their
verdict ("passed:", "rejected:", "pending:", "breaking:", "compatible:", "replay:", "note:",
"skipped:", "no champion:"); each sentence belongs to one gate by what it talks about.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

GateState = Literal["passed", "failed", "attention", "n/a", "not run"]
GATES = (
    ("parity", "ONNX parity"),
    ("bar", "Quality bar"),
    ("champion", "Champion comparison"),
    ("latency", "Latency budget"),
    ("contract", "Contract and replay"),
    ("approval", "Approval"),
)
_CONTRACT_PREFIXES = ("breaking:", "compatible:", "replay:")


@dataclass(frozen=True)
class Gate:
    """One check of validation: its state and every reason recorded for it."""

    key: str
    title: str
    state: GateState
    reasons: tuple[str, ...]


def gate_of(reason: str) -> str:
    """Which gate a reason belongs to (its key in GATES; "approval" for the rest)."""
    text = reason.lower()
    if "parity" in text:
        return "parity"
    if "latency" in text:
        return "latency"
    if text.startswith(_CONTRACT_PREFIXES) or "scoring contract" in text:
        return "contract"
    if "champion" in text:
        return "champion"
    if " bar " in text or "quality bar" in text:
        return "bar"
    return "approval"


def verdict(reason: str) -> str:
    """The word a reason starts with ("passed", "rejected", ...), or "" when it has none."""
    head, sep, _ = reason.partition(":")
    return head.strip().lower() if sep and len(head) <= 20 else ""


def state_of(reasons: Sequence[str]) -> GateState:
    """failed if any reason rejects, attention if one waits for a reviewer, passed if one passed, else n/a."""
    verdicts = {verdict(r) for r in reasons}
    if "rejected" in verdicts:
        return "failed"
    if verdicts & {"pending", "breaking"}:
        return "attention"
    if verdicts & {"passed", "compatible", "replay"}:
        return "passed"
    return "n/a"


def checklist(decision: dict[str, Any] | None, parity: dict[str, Any] | None = None,
              review: tuple[GateState, str] | None = None) -> list[Gate]:
    """Every gate in order; a version not validated yet shows its parity (from export) and "not run" for the rest.

    review: what a reviewer did to a pending version (("passed", "approved by ..."), ("failed", "rejected by ...")).
    """
    reasons = [str(r) for r in (decision or {}).get("reasons") or []]
    if decision is None:
        reasons = [str(r) for r in (parity or {}).get("reasons") or []]
    grouped: dict[str, list[str]] = {key: [] for key, _ in GATES}
    for reason in reasons:
        grouped[gate_of(reason)].append(reason)
    gates = [_gate(key, title, grouped[key], decision) for key, title in GATES]
    if review is not None:
        approval = gates[-1]
        gates[-1] = Gate(approval.key, approval.title, review[0], (*approval.reasons, review[1]))
    return gates


def _gate(key: str, title: str, reasons: list[str], decision: dict[str, Any] | None) -> Gate:
    if reasons:
        return Gate(key, title, state_of(reasons), tuple(reasons))
    if decision is None:
        return Gate(key, title, "not run", ("not validated yet",))
    if key == "contract" and decision.get("champion_version") is not None:
        return Gate(key, title, "passed", ("no change to the scoring contract; no logged requests to replay",))
    if key == "approval":
        outcome = str(decision.get("outcome") or "")
        return Gate(key, title, "passed" if outcome == "promote" else "n/a", (f"outcome: {outcome or 'unknown'}",))
    return Gate(key, title, "n/a", ("no champion: nothing to compare with",) if key in ("champion", "contract")
                else ("not recorded",))
