"""An OpenAPI 3.1 document of the scoring API, generated from every model's champion signature.

One path per model (`/models/<name>/score`, `/models/<name>/feedback`), so a client generator sees
each model's own columns. Every schema under components/schemas is self-contained (no $ref inside),
so a client can validate a body against one with any JSON Schema 2020-12 validator.

The schemas say what shared.scoring accepts, no more: every column must be sent (in any order) except
an optional input's (the spec's `optional: true`), which may be left out; a null is imputed, unknown and
duplicate columns are refused. Allowed categories are an enum, stricter than the endpoint: it scores a
category the model never learnt as unseen (its encoder ignores it; monitoring counts the share), while
the schema holds clients to the categories the model learnt. The spec's min/max are described, not
enforced, as the endpoint does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.contract import InputField, ModelSignature

if TYPE_CHECKING:
    from shared.storage import Storage

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
_ROW_CELL: dict[str, Any] = {"type": ["number", "string", "boolean", "null"]}
_IDS = {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
        "description": "params.ids: one prediction id per row (else <request id>-<row>)"}


def build(storage: Storage) -> dict[str, Any]:
    """The document for every model that has a champion (models without one have nothing to score yet)."""
    from shared import registry
    from shared.contract import signature_of

    signatures: dict[str, ModelSignature] = {}
    for model in registry.list_models(storage):
        if model.aliases.champion is not None:
            record = registry.get_version(storage, model.name, model.aliases.champion)
            signatures[model.name] = signature_of(storage, record)
    return document(signatures)


def document(signatures: dict[str, ModelSignature]) -> dict[str, Any]:
    """OpenAPI 3.1 for the score and feedback routes of these models (name -> champion signature)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": _ERROR, "Feedback": _FEEDBACK, "FeedbackOutcome": _FEEDBACK_OUTCOME}
    for name in sorted(signatures):
        sig = signatures[name]
        schemas[f"{name}.ScoreRequest"] = request_schema(sig)
        schemas[f"{name}.ScoreResponse"] = response_schema(name, sig)
        paths[f"/models/{name}/score"] = {"post": _score_operation(name)}
        paths[f"/models/{name}/feedback"] = {"post": _feedback_operation(name)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Model scoring API", "version": API_VERSION,
                 "description": "Scoring and feedback routes of every model with a champion, from its signature."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"}}},
    }


def cell_schema(field: InputField) -> dict[str, Any]:
    """One value of an input: null is imputed unless the input is required."""
    nullable = [] if field.required else [None]
    optional = " (optional column: may be left out)" if field.optional else ""
    if field.type == "string" and field.allowed is not None:
        return {"enum": [*field.allowed, *nullable],
                "description": f"{field.name}: one of the allowed categories{optional}"}
    kinds = ["number"] if field.type == "number" else ["string", "number"]  # a category may be sent as a number
    schema: dict[str, Any] = {"type": [*kinds, *(["null"] if nullable else [])]}
    if field.min is not None or field.max is not None:
        schema["description"] = f"{field.name}: trained on [{field.min}, {field.max}] (not enforced){optional}"
    elif optional:
        schema["description"] = f"{field.name}{optional}"
    return schema


def request_schema(sig: ModelSignature) -> dict[str, Any]:
    """The JSON body of a scoring request: one of dataframe_split, dataframe_records, inputs, instances."""
    names = sig.input_names
    mandatory = [f.name for f in sig.inputs if not f.optional]
    # A record may lack any key (a null there), so records list no required keys; the endpoint refuses a
    # mandatory column absent from every record, which a per-record schema cannot say.
    record = {"type": "object", "minProperties": 1, "additionalProperties": False,
              "properties": {f.name: cell_schema(f) for f in sig.inputs}}
    records = {"type": "array", "minItems": 1, "items": record}
    columns = {"type": "object", "required": mandatory, "additionalProperties": False,
               "properties": {f.name: {"type": "array", "minItems": 1, "items": cell_schema(f)} for f in sig.inputs}}
    split = {"type": "object", "required": ["columns", "data"], "properties": {
        "columns": _split_columns(names, mandatory),
        "index": {"type": "array"},
        "data": {"type": "array", "minItems": 1,
                 "items": {"type": "array", "items": _ROW_CELL, "minItems": len(mandatory), "maxItems": len(names)}}}}
    rows = {"anyOf": [records, columns]}
    return {"oneOf": [_body("dataframe_split", split), _body("dataframe_records", records),
                      _body("inputs", rows), _body("instances", rows)]}


def _split_columns(names: list[str], mandatory: list[str]) -> dict[str, Any]:
    """dataframe_split.columns: every input once, in any order; optional ones may be left out."""
    schema: dict[str, Any] = {"type": "array", "items": {"enum": names}, "uniqueItems": True,
                              "minItems": len(mandatory), "maxItems": len(names)}
    if len(mandatory) < len(names):
        schema["allOf"] = [{"contains": {"const": name}} for name in mandatory]
        schema["description"] = f"optional columns, which may be left out: {[n for n in names if n not in mandatory]}"
    return schema


def _body(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: schema, "params": _IDS}}


def response_schema(name: str, sig: ModelSignature) -> dict[str, Any]:
    """A 200 answer: predictions and prediction ids in row order, probabilities per class (classifiers), model."""
    out = sig.outputs
    properties: dict[str, Any] = {
        "prediction_ids": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "object", "required": ["name", "version"],
                  "properties": {"name": {"const": name}, "version": {"type": "integer", "minimum": 1}}},
    }
    required = ["predictions", "prediction_ids", "model"]
    if out.kind == "regression":
        item: dict[str, Any] = {"type": ["number", "null"]}
        if out.prediction_range is not None:
            item["description"] = f"holdout predictions ranged [{out.prediction_range.min}, {out.prediction_range.max}]"
        properties["predictions"] = {"type": "array", "items": item}
    else:
        labels = out.classes or []
        # A label comes back as the model's own value (1, not "1"); its string form is one of the classes.
        properties["predictions"] = {"type": "array", "description": f"class labels: {labels}",
                                     "items": {"type": ["string", "number", "boolean"]}}
        columns = out.probability_columns or labels
        properties["probabilities"] = {"type": "array", "items": {
            "type": "object", "required": columns, "additionalProperties": False,
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in columns}}}
        required.append("probabilities")
    return {"type": "object", "required": required, "properties": properties}


def _score_operation(name: str) -> dict[str, Any]:
    ref = f"#/components/schemas/{name}."
    return {
        "operationId": f"score_{name.replace('-', '_')}",
        "summary": f"Score rows with the champion of {name} (or a pinned alias/version)",
        "parameters": [
            {"name": "alias", "in": "query", "schema": {"enum": ["champion", "previous"]}},
            {"name": "version", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "x-request-id", "in": "header", "schema": {"type": "string"}},
            {"name": "x-prediction-ids", "in": "header", "schema": {"type": "string"},
             "description": "comma-separated, one per row"},
        ],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": ref + "ScoreRequest"}},
            "text/csv": {"schema": {"type": "string", "description": "a header row of the input names, then rows"}}}},
        "responses": {"200": _json("predictions", ref + "ScoreResponse"), **_errors()},
    }


def _feedback_operation(name: str) -> dict[str, Any]:
    return {
        "operationId": f"feedback_{name.replace('-', '_')}",
        "summary": f"Ground-truth labels for predictions of {name}, by prediction id",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}},
            "text/csv": {"schema": {"type": "string", "description": "header prediction_id,label"}}}},
        "responses": {"202": _json("what the labels did", "#/components/schemas/FeedbackOutcome"), **_errors()},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _errors() -> dict[str, Any]:
    why = {"400": "bad request", "401": "missing or wrong function key", "404": "model or version not found",
           "413": "payload too large", "415": "unsupported content type", "503": "no champion yet, or unavailable"}
    return {code: _json(text, "#/components/schemas/Error") for code, text in why.items()}


_ERROR: dict[str, Any] = {"type": "object", "required": ["error_code", "message"], "properties": {
    "error_code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}
_FEEDBACK: dict[str, Any] = {"type": "object", "required": ["labels"], "properties": {"labels": {
    "type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["prediction_id", "label"], "properties": {
            "prediction_id": {"type": "string"}, "label": {"type": ["string", "number", "boolean"]}}}}}}
_FEEDBACK_OUTCOME: dict[str, Any] = {"type": "object", "properties": {
    k: {"type": "integer", "minimum": 0} for k in ("accepted", "duplicates", "replaced", "unmatched")}}
