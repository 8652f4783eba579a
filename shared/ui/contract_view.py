"""The selected version's scoring contract on the model page: its signature, and what would change for the
champion's clients if it took the champion's place (shared.contract.compare, the rule the validation gate
applies, here against the champion of now rather than the one at validation time).
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from shared.contract import Difference, InputField, ModelSignature, OutputSpec, compare
from shared.lifecycle.records import ModelVersion


@dataclass(frozen=True)
class InputRow:
    name: str
    type: str
    column: str  # must be sent | may be left out
    nulls: str  # what a null value becomes
    categories: str
    range: str


@dataclass(frozen=True)
class ContractView:
    """What a client sends and gets back, and the differences from the champion's contract (or why none)."""

    inputs: list[InputRow]
    outputs: list[tuple[str, str]]
    formats: list[str]
    changes: list[Difference]
    note: str | None  # why there is no comparison, or that nothing changes


def contract_view(selected: ModelVersion | None, champion: ModelVersion | None) -> ContractView | None:
    """The selected version's contract; None without a readable stored signature (it never reached validation,
    or was validated before signatures were stored)."""
    signature = stored_signature(selected)
    if signature is None:
        return None
    changes, note = _against_champion(signature, selected, champion)
    return ContractView(inputs=[input_row(i) for i in signature.inputs], outputs=output_facts(signature.outputs),
                        formats=list(signature.request_formats), changes=changes, note=note)


def stored_signature(record: ModelVersion | None) -> ModelSignature | None:
    """The record's signature; None when it has none, or one this code cannot read (a page, not a 500)."""
    if record is None or not record.signature:
        return None
    try:
        return ModelSignature.from_json(record.signature)
    except ValidationError:
        return None


def uncompared(selected: ModelVersion | None, champion: ModelVersion | None) -> str | None:
    """Why the selected version is not compared with the champion (the spec diff's rule too), or None."""
    if champion is None or selected is None:
        return "no champion to compare with"
    if champion.version == selected.version:
        return "the selected version is the champion"
    return None


def _against_champion(signature: ModelSignature, selected: ModelVersion | None,
                      champion: ModelVersion | None) -> tuple[list[Difference], str | None]:
    if (why := uncompared(selected, champion)) is not None or champion is None:
        return [], why
    theirs = stored_signature(champion)
    if theirs is None:
        return [], f"the champion (version {champion.version}) has no stored signature to compare with"
    changes = compare(theirs, signature)
    return changes, None if changes else f"the same contract as the champion (version {champion.version})"


def input_row(field: InputField) -> InputRow:
    if field.required:
        nulls = "refused (a value is required)"
    else:
        nulls = f"imputed ({field.imputation})" if field.imputation else "accepted"
    if field.type != "string":
        categories = "-"
    elif field.allowed is None:
        categories = "any"
    else:
        categories = ", ".join(field.allowed)
    return InputRow(name=field.name, type=field.type, column="may be left out" if field.optional else "must be sent",
                    nulls=nulls, categories=categories, range=_range(field.min, field.max))


def output_facts(outputs: OutputSpec) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = [("kind", outputs.kind)]
    if outputs.classes is not None:
        facts.append(("class labels, in order", ", ".join(outputs.classes) or "-"))
    if outputs.probability_columns is not None:
        facts.append(("probability columns", ", ".join(outputs.probability_columns) or "-"))
    if outputs.prediction_range is not None:
        span = outputs.prediction_range
        facts.append(("holdout prediction range", f"{span.min:.6g} .. {span.max:.6g}"))
    return facts


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:.6g} .. {high:.6g}"
    if low is not None:
        return f">= {low:.6g}"
    return "-" if high is None else f"<= {high:.6g}"
