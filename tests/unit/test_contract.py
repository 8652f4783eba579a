"""The scoring contract: signatures from specs, one test per compatibility rule, and the validation gate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.contract import (
    InputField,
    ModelSignature,
    OutputSpec,
    PredictionRange,
    compare,
    prediction_range_of,
    signature_from,
)
from shared.pipeline import _Comparison
from shared.spec import parse_spec
from tests.unit.test_validation import parity, regression_spec

SPECS = Path(__file__).resolve().parents[2] / "examples" / "specs"


def num(name: str, **changes: Any) -> InputField:
    return InputField(**{"name": name, "type": "number", "imputation": "median", **changes})


def cat(name: str, allowed: list[str] | None = None, **changes: Any) -> InputField:
    return InputField(**{"name": name, "type": "string", "imputation": "missing category", "allowed": allowed,
                         **changes})


def sig(*inputs: InputField, classes: list[str] | None = None) -> ModelSignature:
    outputs = (OutputSpec(kind="classification", classes=classes, probability_columns=classes) if classes
               else OutputSpec(kind="regression"))
    return ModelSignature(inputs=list(inputs), outputs=outputs)


def messages(old: ModelSignature, new: ModelSignature) -> list[str]:
    return [d.message for d in compare(old, new)]


# -- signature_from -----------------------------------------------------------------------------


def test_signature_of_a_classifier_spec_records_types_imputation_categories_and_ranges() -> None:
    spec = parse_spec((SPECS / "predictive-maintenance.yaml").read_bytes(), "predictive-maintenance.yaml")
    signature = signature_from(spec, "classification", [0, 1])
    machine, air = signature.inputs[0], signature.inputs[1]
    assert machine == cat("machine_type", ["L", "M", "H"])
    assert air == num("air_temperature", min=250, max=350)
    assert not any(i.required for i in signature.inputs)  # every input is imputed by shared.training
    assert signature.outputs == OutputSpec(kind="classification", classes=["0", "1"], probability_columns=["0", "1"])
    assert signature.request_formats == ["dataframe_split", "dataframe_records", "inputs", "instances", "text/csv"]
    assert ModelSignature.from_json(signature.to_json()) == signature


def test_signature_of_a_regressor_carries_its_holdout_prediction_range() -> None:
    spec = parse_spec((SPECS / "diabetes.yaml").read_bytes(), "diabetes.yaml")
    outputs = {"format": 1, "task": "regression", "predictions": {"min": 40.5, "max": 290.0, "mean": 150.0}}
    signature = signature_from(spec, None, None, prediction_range_of(outputs))
    assert signature.input_names[:4] == ["age", "sex", "bmi", "bp"]
    assert signature.outputs == OutputSpec(kind="regression", prediction_range=PredictionRange(min=40.5, max=290.0))
    assert prediction_range_of(None) is None and prediction_range_of({"predictions": {"min": None}}) is None


def test_signature_of_a_spec_marks_its_optional_features_and_no_others() -> None:
    spec = parse_spec((SPECS / "predictive-maintenance.yaml").read_bytes(), "predictive-maintenance.yaml")
    assert not any(i.optional for i in signature_from(spec, "classification", [0, 1]).inputs)
    marked = spec.model_copy(update={"features": [spec.features[0].model_copy(update={"optional": True}),
                                                  *spec.features[1:]]})
    inputs = signature_from(marked, "classification", [0, 1]).inputs
    assert inputs[0] == cat("machine_type", ["L", "M", "H"], optional=True)
    assert not any(i.optional for i in inputs[1:])


def test_the_same_signature_has_no_differences() -> None:
    one = sig(num("a"), cat("b", ["x"]), classes=["no", "yes"])
    assert compare(one, one) == []


# -- one test per rule --------------------------------------------------------------------------


def test_removing_an_input_is_breaking() -> None:
    assert messages(sig(num("torque"), num("speed")), sig(num("speed"))) == ["breaking: input torque removed"]


def test_renaming_an_input_is_breaking_as_a_removal() -> None:
    found = compare(sig(num("speed")), sig(num("rpm")))
    assert [d.message for d in found] == ["breaking: input speed removed",
                                          "breaking: input rpm added (every input column must be sent)"]
    assert [d.kind for d in found] == ["breaking", "breaking"]


def test_a_nullable_input_becoming_required_is_breaking() -> None:
    assert messages(sig(num("a")), sig(num("a", required=True, imputation=None))) == [
        "breaking: input a became required"]


def test_a_required_input_becoming_nullable_is_compatible() -> None:
    assert messages(sig(num("a", required=True)), sig(num("a"))) == ["compatible: input a no longer required"]


def test_a_type_change_is_breaking() -> None:
    assert messages(sig(num("a")), sig(cat("a"))) == ["breaking: input a type changed from number to string"]


def test_removing_allowed_categories_is_breaking() -> None:
    assert messages(sig(cat("m", ["L", "M", "H"])), sig(cat("m", ["L", "M"]))) == [
        "breaking: input m categories removed: [H]"]


def test_restricting_any_category_to_a_list_is_breaking() -> None:
    assert messages(sig(cat("m")), sig(cat("m", ["L"]))) == ["breaking: input m now restricted to categories [L]"]


def test_widening_categories_is_compatible() -> None:
    assert messages(sig(cat("m", ["L"])), sig(cat("m", ["L", "M"]))) == ["compatible: input m categories added: [M]"]
    assert messages(sig(cat("m", ["L"])), sig(cat("m"))) == ["compatible: input m accepts any category"]


@pytest.mark.parametrize("required", [False, True])
def test_adding_a_mandatory_input_is_breaking_because_the_endpoint_needs_its_column(required: bool) -> None:
    # values of a nullable input may be null, but a mandatory column itself must be in every request
    found = compare(sig(num("a")), sig(num("a"), num("b", required=required)))
    assert [(d.kind, d.message) for d in found] == [
        ("breaking", "breaking: input b added (every input column must be sent)")]


@pytest.mark.parametrize("added", [num("b", optional=True), cat("b", ["L"], optional=True)], ids=["number", "string"])
def test_adding_an_optional_input_is_compatible_because_clients_may_leave_its_column_out(added: InputField) -> None:
    found = compare(sig(num("a")), sig(num("a"), added))
    assert [(d.kind, d.message) for d in found] == [("compatible", "compatible: optional input b added")]


def test_an_optional_input_becoming_mandatory_is_breaking() -> None:
    found = compare(sig(num("a", optional=True)), sig(num("a")))
    assert [(d.kind, d.message) for d in found] == [("breaking", "breaking: input a must now be sent")]


def test_a_mandatory_input_becoming_optional_is_compatible() -> None:
    found = compare(sig(cat("m", ["L"])), sig(cat("m", ["L"], optional=True)))
    assert [(d.kind, d.message) for d in found] == [("compatible", "compatible: input m may now be left out")]


def test_an_output_kind_change_is_breaking() -> None:
    assert messages(sig(num("a")), sig(num("a"), classes=["0", "1"])) == [
        "breaking: output kind changed from regression to classification"]


def test_changed_class_labels_are_breaking() -> None:
    assert messages(sig(num("a"), classes=["no", "yes"]), sig(num("a"), classes=["no", "maybe", "yes"])) == [
        "breaking: class labels changed from [no, yes] to [no, maybe, yes]"]


def test_a_new_prediction_range_or_spec_range_is_not_a_contract_change() -> None:
    old = ModelSignature(inputs=[num("a", min=0)], outputs=OutputSpec(kind="regression"))
    new = ModelSignature(inputs=[num("a", min=5)],
                         outputs=OutputSpec(kind="regression", prediction_range=PredictionRange(min=1, max=2)))
    assert compare(old, new) == []


def test_breaking_differences_come_first() -> None:
    found = compare(sig(num("a"), cat("m", ["L"])), sig(cat("m", ["L", "M"]), num("b")))
    assert [d.kind for d in found] == ["breaking", "breaking", "compatible"]
    assert found[-1].message == "compatible: input m categories added: [M]"


# -- the gate -----------------------------------------------------------------------------------


GOOD = {"rmse": 50.0, "mae": 40.0, "r2": 0.5}


def test_a_breaking_change_never_auto_promotes_and_is_listed() -> None:
    changes = tuple(compare(sig(num("s5"), num("s6")), sig(num("s6"))))
    decision = _Comparison(champion=GOOD, changes=changes).decide(regression_spec(), GOOD, 3.0, parity(n_classes=None))
    assert decision.outcome == "pending_approval"
    assert "breaking: input s5 removed" in decision.reasons
    assert decision.reasons[-1].startswith("pending: 1 breaking change(s) to the scoring contract")


def test_a_compatible_change_is_listed_and_promotes() -> None:
    changes = tuple(compare(sig(cat("m", ["L"])), sig(cat("m", ["L", "M"]))))
    decision = _Comparison(champion=GOOD, changes=changes).decide(regression_spec(), GOOD, 3.0, parity(n_classes=None))
    assert decision.outcome == "promote" and "compatible: input m categories added: [M]" in decision.reasons


def test_an_added_optional_input_promotes() -> None:
    changes = tuple(compare(sig(num("s6")), sig(num("s6"), num("s8", optional=True))))
    decision = _Comparison(champion=GOOD, changes=changes).decide(regression_spec(), GOOD, 3.0, parity(n_classes=None))
    assert decision.outcome == "promote" and "compatible: optional input s8 added" in decision.reasons


def test_a_rejected_challenger_stays_rejected_whatever_the_contract() -> None:
    changes = tuple(compare(sig(num("a")), sig(num("b"))))
    worse = {"rmse": 90.0, "mae": 70.0, "r2": 0.1}
    decision = _Comparison(champion=GOOD, changes=changes).decide(regression_spec(), worse, 3.0,
                                                                  parity(n_classes=None))
    assert decision.outcome == "reject" and "breaking: input a removed" in decision.reasons


def test_a_breaking_change_and_a_champion_problem_keep_both_reasons() -> None:
    changes = tuple(compare(sig(num("s5")), sig(num("s6"))))
    compared = _Comparison(problem="the champion (version 1) cannot be scored on this data", changes=changes)
    decision = compared.decide(regression_spec(), GOOD, 3.0, parity(n_classes=None))
    pending = [r for r in decision.reasons if r.startswith("pending:")]
    assert decision.outcome == "pending_approval" and len(pending) == 2, decision.reasons
