"""The generated OpenAPI document: valid OpenAPI 3.1, and example rows validate against its request schemas."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from openapi_spec_validator import validate

from examples.datasets import breast_cancer, diabetes, predictive_maintenance
from shared.contract import InputField, ModelSignature, PredictionRange, signature_from
from shared.openapi import document
from shared.spec import parse_spec

SPECS = Path(__file__).resolve().parents[2] / "examples" / "specs"
CLASSES: dict[str, list[Any] | None] = {"breast-cancer": ["benign", "malignant"], "diabetes": None,
                                        "predictive-maintenance": [0, 1]}


def example_signature(name: str) -> ModelSignature:
    spec = parse_spec((SPECS / f"{name}.yaml").read_bytes(), f"{name}.yaml")
    spread = PredictionRange(min=25.0, max=346.0) if spec.task == "regression" else None
    return signature_from(spec, spec.task, CLASSES[name], spread)


def rows(name: str) -> pd.DataFrame:
    frame = {"breast-cancer": breast_cancer, "diabetes": diabetes,
             "predictive-maintenance": lambda: predictive_maintenance(n_rows=50)}[name]()
    features = example_signature(name).input_names
    return frame[features].head(5)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document({name: example_signature(name) for name in CLASSES})


def schema(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(doc["components"]["schemas"][name])


def bodies(frame: pd.DataFrame) -> dict[str, Any]:
    split = json.loads(frame.to_json(orient="split", index=False))
    records = json.loads(frame.to_json(orient="records"))
    columns = {c: json.loads(frame[c].to_json(orient="values")) for c in frame.columns}
    reordered = frame[list(reversed(frame.columns))]
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_split_any_order": {"dataframe_split": json.loads(reordered.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records, "params": {"ids": [f"r{i}" for i in range(len(records))]}},
        "inputs_records": {"inputs": records},
        "inputs_columns": {"inputs": columns},
        "instances": {"instances": records},
    }


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {f"/models/{m}/{route}" for m in CLASSES for route in ("score", "feedback")}


def test_an_empty_registry_is_a_valid_document() -> None:
    validate(document({}))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_example_rows_validate_in_every_request_format(doc: dict[str, Any], name: str) -> None:
    validator = schema(doc, f"{name}.ScoreRequest")
    for label, body in bodies(rows(name)).items():
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (label, errors[:3])


def test_nulls_are_accepted_because_every_input_is_imputed(doc: dict[str, Any]) -> None:
    record = json.loads(rows("predictive-maintenance").head(1).to_json(orient="records"))[0]
    record.update(machine_type=None, torque=None)
    schema(doc, "predictive-maintenance.ScoreRequest").validate({"dataframe_records": [record]})


@pytest.mark.parametrize("change", ["unknown column", "missing column", "two formats"])
def test_bodies_the_endpoint_refuses_do_not_validate(doc: dict[str, Any], change: str) -> None:
    frame = rows("predictive-maintenance")
    split = json.loads(frame.to_json(orient="split", index=False))
    records = json.loads(frame.to_json(orient="records"))
    body: dict[str, Any] = {
        "unknown column": {"dataframe_records": [{**records[0], "colour": "red"}]},
        "missing column": {"dataframe_split": {"columns": split["columns"][1:],
                                               "data": [r[1:] for r in split["data"]]}},
        "two formats": {"dataframe_records": records, "instances": records},
    }[change]
    assert not schema(doc, "predictive-maintenance.ScoreRequest").is_valid(body)


def test_a_category_the_model_never_learnt_does_not_validate_though_the_endpoint_scores_it(
        doc: dict[str, Any]) -> None:
    """The enum holds clients to the learnt categories; the endpoint is lenient (unseen: an all-zero encoding)."""
    record = json.loads(rows("predictive-maintenance").head(1).to_json(orient="records"))[0]
    validator = schema(doc, "predictive-maintenance.ScoreRequest")
    assert validator.is_valid({"dataframe_records": [record]})
    assert not validator.is_valid({"dataframe_records": [{**record, "machine_type": "X"}]})
    signature = example_signature("predictive-maintenance")
    [machine_type] = [i for i in signature.inputs if i.name == "machine_type"]
    assert machine_type.allowed == ["L", "M", "H"] and "X" not in machine_type.allowed


def with_optional_s8() -> ModelSignature:
    base = example_signature("diabetes")
    s8 = InputField(name="s8", type="number", imputation="median", optional=True)
    return base.model_copy(update={"inputs": [*base.inputs, s8]})


def test_an_optional_input_may_be_left_out_or_sent_in_every_request_format() -> None:
    validator = schema(document({"diabetes": with_optional_s8()}), "diabetes.ScoreRequest")
    without = rows("diabetes")
    for frame in (without, without.assign(s8=0.5)):
        for label, body in bodies(frame).items():
            errors = [e.message for e in validator.iter_errors(body)]
            assert not errors, (list(frame.columns)[-1], label, errors[:3])


@pytest.mark.parametrize("format_", ["dataframe_split", "inputs_columns"])
def test_a_mandatory_input_is_still_needed_next_to_an_optional_one(format_: str) -> None:
    validator = schema(document({"diabetes": with_optional_s8()}), "diabetes.ScoreRequest")
    frame = rows("diabetes").assign(s8=0.5).drop(columns=["bmi"])
    assert not validator.is_valid(bodies(frame)[format_])


def test_an_optional_input_is_described_and_only_mandatory_columns_are_required() -> None:
    request = document({"diabetes": with_optional_s8()})["components"]["schemas"]["diabetes.ScoreRequest"]
    split, _, inputs, _ = (option["properties"][key] for option, key in zip(
        request["oneOf"], ["dataframe_split", "dataframe_records", "inputs", "instances"], strict=True))
    assert "s8" not in inputs["anyOf"][1]["required"] and "bmi" in inputs["anyOf"][1]["required"]
    assert "may be left out: ['s8']" in split["properties"]["columns"]["description"]
    assert "optional column" in inputs["anyOf"][1]["properties"]["s8"]["items"]["description"]


def test_responses_validate_against_the_response_schemas(doc: dict[str, Any]) -> None:
    model = {"name": "breast-cancer", "version": 3}
    answer = {"predictions": ["benign", "malignant"], "prediction_ids": ["a-0", "a-1"],
              "probabilities": [{"benign": 0.9, "malignant": 0.1}, {"benign": 0.2, "malignant": 0.8}], "model": model}
    schema(doc, "breast-cancer.ScoreResponse").validate(answer)
    assert not schema(doc, "breast-cancer.ScoreResponse").is_valid({**answer, "probabilities": [{"yes": 1.0}]})
    regression = {"predictions": [151.2, None], "prediction_ids": ["b-0", "b-1"],
                  "model": {"name": "diabetes", "version": 1}}
    schema(doc, "diabetes.ScoreResponse").validate(regression)
    assert not schema(doc, "diabetes.ScoreResponse").is_valid({**regression, "model": model})
