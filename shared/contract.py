"""The scoring contract between a model version and the apps that call it: its signature and how two compare.

A signature is fixed when a version is validated (stored on the version, shared.pipeline.ValidateStage)
and derived on the fly, the same way, for versions validated before signatures were stored. It says
what the scoring endpoint accepts and answers: inputs (name, type, whether a value may be left null
because the trained pipeline imputes it, whether the column may be left out (the spec's `optional`),
allowed categories, the spec's range), outputs (task, class labels in order, probability columns, a
regressor's holdout prediction range) and request formats.

compare(old, new) lists what a client of `old` would notice when `new` takes its place: a breaking
difference (an input removed, renamed or retyped, a mandatory input added, an optional input made
mandatory, a value that becomes required, fewer categories, another output kind or other class labels)
keeps the version from being promoted automatically.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from shared.lifecycle.records import ModelVersion
    from shared.spec import FeatureSpec, TrainingSpec
    from shared.storage import Storage

InputType = Literal["number", "string"]
Imputation = Literal["median", "missing category"]
OutputKind = Literal["classification", "regression"]
ChangeKind = Literal["breaking", "compatible"]

SIGNATURE_FORMAT = 1
# What shared.scoring reads (its INPUT_KEYS also take Azure ML's input_data and a plain data list).
REQUEST_FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances", "text/csv")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputField(_Frozen):
    """One input column of the scoring request."""

    name: str
    type: InputType
    # False: a null (or an empty CSV cell) is accepted and imputed; the column itself must still be sent ...
    required: bool = False
    # ... unless optional (the spec's `optional: true`): the column may be left out, all its values imputed.
    optional: bool = False
    imputation: Imputation | None = None
    allowed: list[str] | None = None  # None: any category (string inputs only)
    min: float | None = None  # the spec's data-check range: what the model was trained on, not enforced
    max: float | None = None


class PredictionRange(_Frozen):
    """A regressor's predictions on its holdout: where live predictions are expected to fall."""

    min: float
    max: float


class OutputSpec(_Frozen):
    """What a scoring answer holds for each row."""

    kind: OutputKind
    classes: list[str] | None = None  # labels in the model's order (as str, as probability keys are)
    probability_columns: list[str] | None = None
    prediction_range: PredictionRange | None = None


class ModelSignature(_Frozen):
    """A model version's scoring contract (stored on the version as to_json())."""

    format: int = SIGNATURE_FORMAT
    inputs: list[InputField]
    outputs: OutputSpec
    request_formats: list[str] = list(REQUEST_FORMATS)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelSignature:
        return cls.model_validate(body)


@dataclass(frozen=True)
class Difference:
    """One change between two signatures; message is the decision reason ("breaking: input s5 removed")."""

    kind: ChangeKind
    message: str

    @property
    def breaking(self) -> bool:
        return self.kind == "breaking"


def _input(feature: FeatureSpec) -> InputField:
    # shared.training imputes every input (median for numbers, a constant category for strings),
    # so no value is required today; a pipeline without an imputer would set required=True here.
    if feature.kind == "numeric":
        return InputField(name=feature.name, type="number", imputation="median", min=feature.min, max=feature.max,
                          optional=feature.optional)
    allowed = list(feature.allowed) if feature.allowed is not None else None
    return InputField(name=feature.name, type="string", imputation="missing category", allowed=allowed,
                      optional=feature.optional)


def signature_from(spec: TrainingSpec, task: str | None = None, classes: Sequence[Any] | None = None,
                   prediction_range: PredictionRange | None = None) -> ModelSignature:
    """The signature of a model trained from `spec` (task defaults to the spec's; classes as trained)."""
    kind: OutputKind = "regression" if (task or spec.task) == "regression" else "classification"
    if kind == "regression":
        outputs = OutputSpec(kind=kind, prediction_range=prediction_range)
    else:
        labels = [str(c) for c in classes or ()]
        outputs = OutputSpec(kind=kind, classes=labels, probability_columns=labels)
    return ModelSignature(inputs=[_input(f) for f in spec.features], outputs=outputs)


def prediction_range_of(holdout_outputs: dict[str, Any] | None) -> PredictionRange | None:
    """The holdout prediction range from a version's holdout_outputs profile, when it has one."""
    profile = (holdout_outputs or {}).get("predictions") or {}
    low, high = profile.get("min"), profile.get("max")
    if isinstance(low, int | float) and isinstance(high, int | float):
        return PredictionRange(min=float(low), max=float(high))
    return None


def signature_of(storage: Storage, record: ModelVersion) -> ModelSignature:
    """A version's stored signature, or (validated before signatures were stored) one derived from its spec.

    Raises NotFound when the version's spec is gone.
    """
    from shared import registry

    if record.signature:
        return ModelSignature.from_json(record.signature)
    spec = registry.spec_at(storage, record.model, (record.lineage or {})["spec_hash"])
    return signature_from(spec, record.task, record.classes, prediction_range_of(record.holdout_outputs))


# -- compatibility ----------------------------------------------------------------------------------


def compare(old: ModelSignature, new: ModelSignature) -> list[Difference]:
    """What changes for a client of `old` when `new` replaces it: breaking ones first, in input order."""
    found: list[Difference] = []
    new_inputs = {i.name: i for i in new.inputs}
    old_names = set(old.input_names)
    for before in old.inputs:
        after = new_inputs.get(before.name)
        found += [_breaking(f"input {before.name} removed")] if after is None else _input_changes(before, after)
    # The endpoint needs every mandatory input column in a request (null values are imputed, absent columns
    # are a 400), so a client of `old` breaks on a new mandatory input; a new optional one it may leave out.
    found += [_compatible(f"optional input {added.name} added") if added.optional
              else _breaking(f"input {added.name} added (every input column must be sent)")
              for added in new.inputs if added.name not in old_names]
    found += _output_changes(old.outputs, new.outputs)
    return sorted(found, key=lambda d: not d.breaking)  # stable: input order kept within each kind


def _breaking(what: str) -> Difference:
    return Difference("breaking", f"breaking: {what}")


def _compatible(what: str) -> Difference:
    return Difference("compatible", f"compatible: {what}")


def _input_changes(old: InputField, new: InputField) -> list[Difference]:
    if old.type != new.type:
        return [_breaking(f"input {old.name} type changed from {old.type} to {new.type}")]
    found = []
    if old.optional != new.optional:
        found.append(_compatible(f"input {old.name} may now be left out") if new.optional
                     else _breaking(f"input {old.name} must now be sent"))
    if old.required != new.required:
        found.append(_breaking(f"input {old.name} became required") if new.required
                     else _compatible(f"input {old.name} no longer required"))
    return found + _category_changes(old.name, old.allowed, new.allowed)


def _category_changes(name: str, old: list[str] | None, new: list[str] | None) -> list[Difference]:
    if old is None:
        return [] if new is None else [_breaking(f"input {name} now restricted to categories {_listed(new)}")]
    if new is None:
        return [_compatible(f"input {name} accepts any category")]
    removed, added = [c for c in old if c not in new], [c for c in new if c not in old]
    found = [_breaking(f"input {name} categories removed: {_listed(removed)}")] if removed else []
    return found + ([_compatible(f"input {name} categories added: {_listed(added)}")] if added else [])


def _output_changes(old: OutputSpec, new: OutputSpec) -> list[Difference]:
    if old.kind != new.kind:
        return [_breaking(f"output kind changed from {old.kind} to {new.kind}")]
    if (old.classes or []) != (new.classes or []):
        return [_breaking(f"class labels changed from {_listed(old.classes or [])} to {_listed(new.classes or [])}")]
    return []


def _listed(values: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(values[:limit])
    return f"[{shown}{f', ... ({len(values) - limit} more)' if len(values) > limit else ''}]"
