"""The real function_app.py indexes with the real azure-functions library, and the local host accepts it."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from devhost.azurite import ROOT
from devhost.index import SUPPORTED_TRIGGERS, import_app, index

FunctionBindings = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def functions() -> FunctionBindings:
    """Every function's bindings, exactly as the Python worker sends them to the host."""
    app = import_app(ROOT)
    out = {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()] for f in app.get_functions()}
    for name, bindings in sorted(out.items()):
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        settings = {k: v for k, v in trigger.items() if k not in ("type", "direction", "name")}
        print(f"{name}: {trigger['type']} {settings}")
    return out


def trigger(bindings: list[dict[str, Any]]) -> dict[str, Any]:
    [t] = [b for b in bindings if b["type"].endswith("Trigger")]
    return t


def test_health_is_an_anonymous_get_http_trigger_on_route_health(functions: FunctionBindings) -> None:
    t = trigger(functions["health"])
    assert (t["type"], t["route"], t["methods"], t["authLevel"]) == ("httpTrigger", "health", ["GET"], "ANONYMOUS")


def test_every_function_has_exactly_one_trigger_of_a_supported_type(functions: FunctionBindings) -> None:
    for name, bindings in functions.items():
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        assert len(triggers) == 1, name
        assert triggers[0]["type"] in SUPPORTED_TRIGGERS, name


def test_queue_triggers_name_a_queue_and_blob_triggers_a_path(functions: FunctionBindings) -> None:
    for name, bindings in functions.items():
        t = trigger(bindings)
        if t["type"] == "queueTrigger":
            assert t.get("queueName"), name
        if t["type"] == "blobTrigger":
            container, _, rest = t["path"].partition("/")
            assert container and rest and "{" not in container, name
        if t["type"] == "timerTrigger":
            assert t.get("schedule"), name


def test_the_local_host_accepts_every_function_of_the_app() -> None:
    specs = index(import_app(ROOT))
    assert {s.name for s in specs} >= {"health"}


def test_importing_the_app_loads_no_training_library() -> None:
    """Every cold instance imports function_app, including those that only score: training stays in the
    handlers that train (scikit-learn, pandas, scipy, skl2onnx, onnx and pyarrow load on first use)."""
    code = ("import sys, function_app; heavy = {'sklearn', 'pandas', 'scipy', 'skl2onnx', 'onnx', 'pyarrow'}; "
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "", out.stdout
