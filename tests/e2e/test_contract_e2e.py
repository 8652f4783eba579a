"""The scoring contract end to end: a breaking spec change waits for a reviewer, a compatible one (an added
optional input) promotes and is scored without its column, and the OpenAPI document and signature routes
describe what the score route really accepts and answers."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema
import numpy as np
import pytest
import requests
from openapi_spec_validator import validate

from devhost.azurite import Azurite
from devhost.host import DevHost
from examples.datasets import diabetes
from shared import paths, registry
from shared.lifecycle.records import RunStatus, VersionStatus
from shared.settings import Settings
from shared.storage import AzureStorage
from tests.e2e.conftest import MASTER_KEY
from tests.e2e.support import drop, example_spec, upload, wait_for_run
from tests.fixtures.devhost_support import wait_for

R, V = RunStatus, VersionStatus
LENIENT = {"rmse": {"max_regression": 1000}}  # metrics never block: only the contract decides


@dataclass(frozen=True)
class Drill:
    model: str
    first: int  # promoted, every diabetes feature
    without_s5: int  # pending: s5 removed
    with_s7: int  # s7 added: held (clients must now send it), then approved
    with_s8: int  # s8 added as optional: promoted on its own (clients may leave it out)


@pytest.fixture(scope="module")
def drill(app_host: DevHost, azurite: Azurite) -> Drill:
    session = requests.Session()

    def api(method: str, route: str, *, key: str = "function", **kwargs: Any) -> requests.Response:
        secret = MASTER_KEY if key == "master" else app_host.function_key or ""
        return session.request(method, f"http://127.0.0.1:{app_host.port}/api/{route}",
                               headers={"x-functions-key": secret}, timeout=60, **kwargs)

    gateway = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    model = f"contract-{uuid.uuid4().hex[:8]}"
    full = example_spec("diabetes", model, approval="auto", comparison=LENIENT)
    upload(gateway, full)
    drop(gateway, model, "all.csv", diabetes())
    first = wait_for_run(gateway, model, "all.csv")
    assert first.status == R.PROMOTED, registry.get_version(gateway, model, first.version or 0).decision
    # production traffic for the release test to replay: the champion answers these rows
    rows = diabetes().drop(columns=["progression"]).head(20)
    scored = api("POST", f"models/{model}/score", json={"dataframe_split": json.loads(
        rows.to_json(orient="split", index=False))})
    assert scored.status_code == 200, scored.text
    wait_for(lambda: gateway.list(paths.PREDICTIONS, f"{model}/") or None, "the scored rows in the log", timeout=30)

    upload(gateway, {**full, "features": [f for f in full["features"] if f["name"] != "s5"]})
    drop(gateway, model, "no-s5.csv", diabetes().sample(frac=0.9, random_state=6).drop(columns=["s5"]))
    held = wait_for_run(gateway, model, "no-s5.csv")

    upload(gateway, {**full, "features": [*full["features"], {"name": "s7", "kind": "numeric"}]})
    data = diabetes()
    data["s7"] = np.random.default_rng(7).normal(0.0, 1.0, len(data))
    drop(gateway, model, "with-s7.csv", data)
    added = wait_for_run(gateway, model, "with-s7.csv")
    assert added.status == R.PENDING_APPROVAL, registry.get_version(gateway, model, added.version or 0).decision
    approved = api("POST", f"registry/models/{model}/versions/{added.version}/approve", key="master", json={})
    assert approved.status_code == 200, approved.text
    assert registry.resolve_alias(gateway, model)[0] == added.version

    optional = {"name": "s8", "kind": "numeric", "optional": True}
    upload(gateway, {**full, "features": [*full["features"], {"name": "s7", "kind": "numeric"}, optional]})
    data["s8"] = np.random.default_rng(8).normal(0.0, 1.0, len(data))
    drop(gateway, model, "with-s8.csv", data)
    compatible = wait_for_run(gateway, model, "with-s8.csv")
    assert compatible.status == R.PROMOTED, registry.get_version(gateway, model, compatible.version or 0).decision
    return Drill(model, int(first.version or 0), int(held.version or 0), int(added.version or 0),
                 int(compatible.version or 0))


@pytest.fixture(scope="module")
def gateway(azurite: Azurite) -> AzureStorage:
    return AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))


def test_a_removed_input_waits_for_a_reviewer_even_with_approval_auto(drill: Drill, gateway: AzureStorage) -> None:
    held = registry.get_version(gateway, drill.model, drill.without_s5)
    assert held.status == V.PENDING_APPROVAL, held.decision
    reasons = held.decision["reasons"]
    assert "breaking: input s5 removed" in reasons, reasons
    assert any(r.startswith("pending:") and "breaking change" in r for r in reasons), reasons
    assert any("absent from the new data" in r for r in reasons), reasons  # the champion cannot be scored too
    assert held.decision["signature_changes"] == ["breaking: input s5 removed"]
    replayed = held.decision["replay"]
    assert replayed["rows"] == 20 and replayed["failed"] == 20, replayed  # every logged request still sends s5
    assert any(r.startswith("breaking: 20 of 20 replayed rows") and "s5" in r for r in reasons), reasons
    assert "s5" not in [i["name"] for i in held.signature["inputs"]]


def test_an_added_input_waits_for_a_reviewer_because_every_column_must_be_sent(drill: Drill,
                                                                               gateway: AzureStorage) -> None:
    added = registry.get_version(gateway, drill.model, drill.with_s7)
    assert added.decision["outcome"] == "pending_approval", added.decision
    assert "breaking: input s7 added (every input column must be sent)" in added.decision["reasons"], added.decision
    assert V.PROMOTED in [h.status for h in added.history]  # approved by the reviewer in the fixture ...
    assert added.status == V.SUPERSEDED  # ... and replaced by the s8 version since
    assert registry.resolve_alias(gateway, drill.model, registry.PREVIOUS)[0] == drill.with_s7


def test_an_added_optional_input_promotes_and_requests_without_it_are_scored(drill: Drill, api: Any,
                                                                             gateway: AzureStorage) -> None:
    added = registry.get_version(gateway, drill.model, drill.with_s8)
    assert added.status == V.PROMOTED and added.decision["outcome"] == "promote", added.decision
    assert "compatible: optional input s8 added" in added.decision["reasons"], added.decision
    assert added.decision["signature_changes"] == ["compatible: optional input s8 added"]
    assert (f"replay: none of the champion's (version {drill.with_s7}) requests logged in the last 7 days to "
            "replay; the contract rests on the signature comparison alone") in added.decision["reasons"]
    assert registry.resolve_alias(gateway, drill.model)[0] == drill.with_s8
    rows = diabetes().drop(columns=["progression"]).head(3).assign(s7=0.25)
    without = api("POST", f"models/{drill.model}/score", json={"dataframe_split": json.loads(
        rows.to_json(orient="split", index=False))})
    assert without.status_code == 200, without.text
    assert without.json()["model"]["version"] == drill.with_s8
    assert without.headers["x-model-version"] == str(drill.with_s8)
    as_nulls = api("POST", f"models/{drill.model}/score", json={"dataframe_records": [
        {**record, "s8": None} for record in json.loads(rows.to_json(orient="records"))]})
    assert as_nulls.status_code == 200, as_nulls.text
    assert as_nulls.json()["predictions"] == without.json()["predictions"]  # a left-out column is all nulls
    no_s7 = api("POST", f"models/{drill.model}/score", json={"dataframe_split": json.loads(
        rows.drop(columns=["s7"]).to_json(orient="split", index=False))})
    assert no_s7.status_code == 400 and "missing columns ['s7']" in no_s7.json()["message"], no_s7.text


def test_the_signature_route_answers_the_champion_or_a_pinned_version(drill: Drill, api: Any,
                                                                      gateway: AzureStorage) -> None:
    answer = api("GET", f"models/{drill.model}/signature")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    champion = registry.get_version(gateway, drill.model, drill.with_s8)
    assert body["version"] == drill.with_s8 and body["stored"] is True
    assert body["signature"] == champion.signature
    assert body["signature"]["inputs"][-2:] == [
        {"name": "s7", "type": "number", "required": False, "optional": False,
         "imputation": "median", "allowed": None, "min": None, "max": None},
        {"name": "s8", "type": "number", "required": False, "optional": True,
         "imputation": "median", "allowed": None, "min": None, "max": None}]
    assert body["signature"]["outputs"]["kind"] == "regression"
    pinned = api("GET", f"models/{drill.model}/signature", params={"version": str(drill.without_s5)}).json()
    assert "s5" not in [i["name"] for i in pinned["signature"]["inputs"]]
    before = api("GET", f"models/{drill.model}/signature", params={"version": str(drill.with_s7)}).json()
    assert before["version"] == drill.with_s7 and before["signature"]["inputs"][-1]["name"] == "s7"
    assert api("GET", f"models/{drill.model}/signature", key=None).status_code == 401
    assert api("GET", "models/no-such-model-x/signature").status_code == 404
    assert api("GET", f"models/{drill.model}/signature", params={"version": "x"}).status_code == 400


def test_openapi_validates_and_describes_a_real_scoring_exchange(drill: Drill, api: Any) -> None:
    answer = api("GET", "openapi.json")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    validate(doc)
    assert f"/models/{drill.model}/score" in doc["paths"] and f"/models/{drill.model}/feedback" in doc["paths"]
    schemas = doc["components"]["schemas"]
    inputs = api("GET", f"models/{drill.model}/signature").json()["signature"]["inputs"]
    features = [i["name"] for i in inputs]
    assert features[-1] == "s8" and inputs[-1]["optional"] is True
    data = diabetes()
    data["s7"], data["s8"] = 0.5, -0.5
    validator = jsonschema.Draft202012Validator(schemas[f"{drill.model}.ScoreRequest"])
    for frame in (data[features].head(4), data[features[:-1]].head(4)):  # with and without the optional s8
        request = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        validator.validate(request)
        scored = api("POST", f"models/{drill.model}/score", json=request)
        assert scored.status_code == 200, (list(frame.columns), scored.text)
        jsonschema.Draft202012Validator(schemas[f"{drill.model}.ScoreResponse"]).validate(scored.json())
        assert scored.json()["model"]["version"] == drill.with_s8
    without_s7 = data[[f for f in features if f != "s7"]].head(4)
    assert not validator.is_valid({"dataframe_split": json.loads(without_s7.to_json(orient="split", index=False))})
