"""Small ONNX models that follow the export contract, built with sklearn + skl2onnx for the tests."""
from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import numpy as np
import onnx
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = ("torque", "speed")
CATEGORICAL = ("type",)
FEATURES = NUMERIC + CATEGORICAL
MISSING = "missing"
CLASSES_STR = ("fail", "ok")


def training_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Rows with a learnable target; some categoricals are already the missing marker."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "torque": rng.normal(40, 10, rows),
            "speed": rng.normal(1500, 100, rows),
            "type": rng.choice(["L", "M", "H", MISSING], rows).astype(object),
        }
    )
    frame["failed"] = np.where(frame.torque + rng.normal(0, 5, rows) > 42, "fail", "ok")
    return frame


def _preprocessor(numeric_type: str) -> ColumnTransformer:
    # ai.onnx.ml Imputer only runs on float in onnxruntime, so the double variant skips numeric imputation.
    numeric: Any = (
        Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
        if numeric_type == "float"
        else StandardScaler()
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", missing_values="", fill_value=MISSING)),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    return ColumnTransformer([("num", numeric, list(NUMERIC)), ("cat", categorical, list(CATEGORICAL))])


def _initial_types(numeric_type: str) -> list[tuple[str, Any]]:
    tensor = FloatTensorType if numeric_type == "float" else DoubleTensorType
    return [(n, tensor([None, 1])) for n in NUMERIC] + [(c, StringTensorType([None, 1])) for c in CATEGORICAL]


def _with_signature(model: onnx.ModelProto, signature: dict[str, Any]) -> bytes:
    prop = model.metadata_props.add()
    prop.key = "mlops.signature"
    prop.value = json.dumps(signature)
    return model.SerializeToString()


def _signature(name: str, task: str, target: str, numeric_type: str, classes: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "task": task,
        "target": target,
        "features": [{"name": n, "kind": "numeric"} for n in NUMERIC]
        + [{"name": c, "kind": "categorical"} for c in CATEGORICAL],
        "classes": classes,
        "categorical_missing": MISSING,
        "input_types": {**{n: numeric_type for n in NUMERIC}, **{c: "string" for c in CATEGORICAL}},
    }


@functools.cache
def classifier(numeric_type: str = "float", int_labels: bool = False, seed: int = 0, name: str = "churn") -> bytes:
    """Logistic regression (labels 'fail'/'ok', or 0/1 with int_labels) as contract ONNX bytes."""
    frame = training_frame(seed=seed)
    target = (frame.failed == "fail").astype(int) if int_labels else frame.failed
    estimator = LogisticRegression()
    pipe = Pipeline([("pre", _preprocessor(numeric_type)), ("model", estimator)])
    pipe.fit(frame[list(FEATURES)], target)
    model = convert_sklearn(
        pipe, initial_types=_initial_types(numeric_type), options={id(estimator): {"zipmap": False}}
    )
    classes = [c.item() if hasattr(c, "item") else c for c in estimator.classes_]
    return _with_signature(model, _signature(name, "classification", "failed", numeric_type, classes))


@functools.cache
def regressor(numeric_type: str = "double", seed: int = 0, name: str = "wear") -> bytes:
    """Ridge regression of a made-up wear score as contract ONNX bytes."""
    frame = training_frame(seed=seed)
    target = frame.torque * 0.5 + (frame.type == "H") * 3.0
    pipe = Pipeline([("pre", _preprocessor(numeric_type)), ("model", Ridge())])
    pipe.fit(frame[list(FEATURES)], target)
    model = convert_sklearn(pipe, initial_types=_initial_types(numeric_type))
    return _with_signature(model, _signature(name, "regression", "wear", numeric_type, []))


def sha256(data: bytes) -> str:
    """Hex sha256, as the registry records it."""
    return hashlib.sha256(data).hexdigest()
