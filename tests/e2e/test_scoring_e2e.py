"""Scoring end to end: a trained breast-cancer model served by the real app in the local host.

One module-scoped model with three versions (trained from slightly different drops so their data
hashes differ) held for approval: approving 2 then 1 over the admin API leaves champion=1,
previous=2, and version 3 (still pending) is never loaded until the tamper test asks for it.
"""
from __future__ import annotations

import io
import json
import threading
import uuid
from typing import Any

import pandas as pd
import pytest
import requests

from devhost.azurite import Azurite
from devhost.host import DevHost
from examples.datasets import breast_cancer
from shared import paths, registry
from shared.clock import SYSTEM_CLOCK
from shared.errors import NotFound
from shared.lifecycle.records import AliasAction, RunStatus, VersionStatus
from shared.settings import Settings
from shared.storage import AzureStorage
from tests.e2e.conftest import MASTER_KEY
from tests.e2e.support import drop, example_spec, upload, wait_for_run
from tests.fixtures.devhost_support import wait_for

MAX_BODY_BYTES = 5 * 1024 * 1024  # MLOPS_SCORING_MAX_BODY_BYTES default


@pytest.fixture(scope="module")
def gateway(azurite: Azurite) -> AzureStorage:
    """A gateway over the session's Azurite that lives as long as this module."""
    return AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return breast_cancer()


@pytest.fixture(scope="module")
def rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Five feature rows (no target) to score in every format."""
    return frame.drop(columns=["diagnosis"]).iloc[[0, 1, 20, 100, 300]].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(app_host: DevHost, gateway: AzureStorage, frame: pd.DataFrame) -> str:
    """A breast-cancer model with versions 1..3 exported; 2 then 1 approved: champion=1, previous=2."""
    name = f"bc-{uuid.uuid4().hex[:8]}"
    upload(gateway, example_spec("breast-cancer", name, approval="manual"))
    versions = []
    for i in range(3):
        source = f"v{i + 1}.csv"
        drop(gateway, name, source, frame.iloc[: len(frame) - i])  # fewer rows: a new data hash
        run = wait_for_run(gateway, name, source)
        assert run.status == RunStatus.PENDING_APPROVAL and run.version, f"run {run} is not waiting for approval"
        versions.append(run.version)
    assert versions == [1, 2, 3]
    for version in (1, 2, 3):
        assert registry.get_version(gateway, name, version).onnx, f"version {version} was not exported"
    for version in (2, 1):  # the real path: a reviewer approves over the admin API
        approved = requests.post(f"{app_host.url}/api/registry/models/{name}/versions/{version}/approve",
                                 json={"by": "e2e"}, headers={"x-functions-key": MASTER_KEY}, timeout=60)
        assert approved.status_code == 200 and approved.json()["changed"], approved.text
    aliases, _ = registry.get_aliases(gateway, name)
    assert (aliases.champion, aliases.previous) == (1, 2)
    assert [h.action for h in aliases.history] == [AliasAction.APPROVE, AliasAction.APPROVE]
    assert registry.get_version(gateway, name, 3).status == VersionStatus.PENDING_APPROVAL
    return name


def score(api: Any, model: str, query: str = "", **kwargs: Any) -> requests.Response:
    response: requests.Response = api("POST", f"models/{model}/score{query}", **kwargs)
    return response


def records_of(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: float(v) for k, v in r.items()} for r in rows.to_dict(orient="records")]


def bodies(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The same rows in every supported request format (CSV is sent separately)."""
    columns = list(rows.columns)
    data = rows.to_numpy().tolist()
    records = records_of(rows)
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": data}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records, "params": {"ignored": True}},
        "inputs": {"inputs": data, "params": {"temperature": 0}},
        "input_data": {"input_data": {"columns": columns, "index": list(range(len(data))), "data": data}},
        "data": {"data": data},
    }


def error(response: requests.Response, status: int, code: str | None = None) -> str:
    """Assert an MLflow-shaped error with this status; return its message."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    if code is not None:
        assert body["error_code"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return str(body["message"])


# ---------------------------------------------------------------------------------------------
# Formats


def test_every_request_format_gives_the_same_predictions(api: Any, model: str, rows: pd.DataFrame) -> None:
    results = {}
    for fmt, body in bodies(rows).items():
        response = score(api, model, json=body)
        assert response.status_code == 200, (fmt, response.text[:500])
        results[fmt] = (response.json(), response.headers.get("x-model-version"))
    csv_response = score(api, model, data=rows.to_csv(index=False).encode(), headers={"content-type": "text/csv"})
    assert csv_response.status_code == 200, csv_response.text[:500]
    results["csv"] = (csv_response.json(), csv_response.headers.get("x-model-version"))

    reference, _ = results["dataframe_split"]
    assert len(reference["predictions"]) == 5
    assert set(reference["predictions"]) <= {"benign", "malignant"}
    for fmt, (body, header) in results.items():
        assert header == "1", fmt
        assert body["model"] == {"name": model, "version": 1}, fmt
        assert body["predictions"] == reference["predictions"], fmt
        assert len(body["probabilities"]) == 5, fmt
        for got, want in zip(body["probabilities"], reference["probabilities"], strict=True):
            assert set(got) == {"benign", "malignant"}, fmt
            assert got == pytest.approx(want, abs=1e-9), fmt
            assert sum(got.values()) == pytest.approx(1.0, abs=1e-4), fmt


# ---------------------------------------------------------------------------------------------
# Errors


def test_malformed_json_is_a_400(api: Any, model: str) -> None:
    message = error(score(api, model, data=b'{"data": [[1, 2', headers={"content-type": "application/json"}),
                    400, "BAD_REQUEST")
    assert "not valid JSON" in message


def test_two_input_keys_are_a_400(api: Any, model: str, rows: pd.DataFrame) -> None:
    data = rows.to_numpy().tolist()
    message = error(score(api, model, json={"data": data, "inputs": data}), 400, "BAD_REQUEST")
    assert "exactly one of" in message and "'data'" in message and "'inputs'" in message


def test_a_body_without_an_input_key_is_a_400(api: Any, model: str) -> None:
    message = error(score(api, model, json={"rows": [[1.0]], "params": {}}), 400, "BAD_REQUEST")
    assert "exactly one of" in message and "dataframe_split" in message


def test_a_missing_column_is_a_400_naming_it(api: Any, model: str, rows: pd.DataFrame) -> None:
    partial = rows.drop(columns=["mean_texture"])
    body = {"dataframe_split": {"columns": list(partial.columns), "data": partial.to_numpy().tolist()}}
    message = error(score(api, model, json=body), 400, "BAD_REQUEST")
    assert "missing columns ['mean_texture']" in message


def test_an_unknown_column_is_a_400_naming_it(api: Any, model: str, rows: pd.DataFrame) -> None:
    records = [{**r, "shoe_size": 42.0} for r in records_of(rows)]
    message = error(score(api, model, json={"dataframe_records": records}), 400, "BAD_REQUEST")
    assert "unknown columns ['shoe_size']" in message


def test_a_wrong_type_is_a_400_naming_column_and_row(api: Any, model: str, rows: pd.DataFrame) -> None:
    records = records_of(rows)
    records[3]["worst_area"] = "large"
    message = error(score(api, model, json={"dataframe_records": records}), 400, "BAD_REQUEST")
    assert "column 'worst_area' row 3" in message and "expected a number" in message and "'large'" in message


def test_a_body_over_the_limit_is_a_413(api: Any, model: str) -> None:
    body = b'{"data": [[' + b"1.0, " * (MAX_BODY_BYTES // 5) + b"1.0]]}"
    assert len(body) > MAX_BODY_BYTES
    message = error(score(api, model, data=body, headers={"content-type": "application/json"}),
                    413, "PAYLOAD_TOO_LARGE")
    assert f"max_bytes={MAX_BODY_BYTES}" in message and str(len(body)) in message


def test_an_unsupported_content_type_is_a_415(api: Any, model: str) -> None:
    response = score(api, model, data=b"<rows/>", headers={"content-type": "application/xml"})
    message = error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/xml" in message and "text/csv" in message


def test_an_unknown_model_is_a_404(api: Any) -> None:
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    message = error(score(api, name, json={"data": [[1.0]]}), 404, "RESOURCE_DOES_NOT_EXIST")
    assert f"name={name}" in message


def test_a_model_without_a_champion_is_a_503(api: Any, gateway: AzureStorage) -> None:
    name = f"bc-untrained-{uuid.uuid4().hex[:8]}"
    upload(gateway, example_spec("breast-cancer", name))
    message = error(score(api, name, json={"data": [[1.0]]}), 503, "TEMPORARILY_UNAVAILABLE")
    assert f"name={name}" in message and "champion" in message


def test_a_request_without_the_function_key_is_a_401(api: Any, model: str, rows: pd.DataFrame) -> None:
    response = score(api, model, key=None, json=bodies(rows)["data"])
    assert response.status_code == 401, response.text[:500]
    assert "x-model-version" not in response.headers


def test_a_non_numeric_version_is_a_400(api: Any, model: str, rows: pd.DataFrame) -> None:
    message = error(score(api, model, "?version=abc", json=bodies(rows)["data"]), 400, "INVALID_PARAMETER_VALUE")
    assert "?version=" in message and "'abc'" in message


# ---------------------------------------------------------------------------------------------
# Versions, hot swap, integrity


def test_a_pinned_version_is_served_without_touching_the_champion(api: Any, model: str, rows: pd.DataFrame) -> None:
    pinned = score(api, model, "?version=2", json=bodies(rows)["data"])
    assert pinned.status_code == 200, pinned.text[:500]
    assert pinned.headers["x-model-version"] == "2" and pinned.json()["model"]["version"] == 2
    champion = score(api, model, json=bodies(rows)["data"])
    assert champion.headers["x-model-version"] == "1"
    by_alias = score(api, model, "?alias=previous", json=bodies(rows)["data"])
    assert by_alias.status_code == 200 and by_alias.headers["x-model-version"] == "2"


def test_rollback_hot_swaps_the_champion_under_concurrent_requests_without_failures(
    app_host: DevHost, model: str, gateway: AzureStorage, rows: pd.DataFrame
) -> None:
    url = f"http://127.0.0.1:{app_host.port}/api/models/{model}/score"
    headers = {"x-functions-key": app_host.function_key} if app_host.function_key else {}
    payload = json.dumps(bodies(rows)["dataframe_split"]).encode()
    stop = threading.Event()
    seen: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    crashes: list[BaseException] = []

    def client(out: list[tuple[int, str | None]]) -> None:
        try:
            with requests.Session() as session:
                for _ in range(2000):  # bounded even if the test never sets stop
                    if stop.is_set():
                        return
                    r = session.post(url, data=payload, headers={**headers, "content-type": "application/json"},
                                     timeout=30)
                    out.append((r.status_code, r.headers.get("x-model-version")))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            crashes.append(exc)

    threads = [threading.Thread(target=client, args=(out,), daemon=True) for out in seen]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(len(out) >= 3 for out in seen) or crashes, "every client scoring the champion", 30)
        assert not crashes, crashes
        flip = registry.rollback(gateway, SYSTEM_CLOCK, model, expected_from=1, by="e2e", reason="hot swap under load")
        assert flip.changed and (flip.aliases.champion, flip.aliases.previous) == (2, None)
        wait_for(lambda: all(any(v == "2" for _, v in list(out)) for out in seen) or crashes,
                 "every client seeing version 2 after the rollback", 30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not crashes, crashes
    responses = [r for out in seen for r in out]
    assert {status for status, _ in responses} == {200}, [r for r in responses if r[0] != 200][:5]
    assert {version for _, version in responses} == {"1", "2"}
    for out in seen:  # once a client sees the new champion it never sees the old one again
        versions = [v for _, v in out]
        first_new = versions.index("2")
        assert set(versions[first_new:]) == {"2"}, versions
    # Put the aliases back (roll forward to 1): champion=1, previous=2.
    back = registry.rollback(gateway, SYSTEM_CLOCK, model, expected_from=2, to=1, by="e2e", reason="restore")
    assert back.changed and (back.aliases.champion, back.aliases.previous) == (1, 2)
    assert [registry.get_version(gateway, model, v).status for v in (1, 2)] == [
        VersionStatus.PROMOTED, VersionStatus.ROLLED_BACK]


def test_a_tampered_artifact_is_refused_while_the_champion_keeps_serving(
    api: Any, model: str, gateway: AzureStorage, rows: pd.DataFrame
) -> None:
    artifact = registry.get_version(gateway, model, 3).artifacts["onnx"].path
    original = gateway.read(paths.MLOPS, artifact).data
    gateway.write(paths.MLOPS, artifact, original[:-16] + b"tampered-bytes!!")
    try:
        message = error(score(api, model, "?version=3", json=bodies(rows)["data"]), 500, "MODEL_INTEGRITY_ERROR")
        assert "sha256" in message and "version=3" in message and "refusing" in message
        champion = score(api, model, json=bodies(rows)["data"])
        assert champion.status_code == 200, champion.text[:500]
        assert champion.headers["x-model-version"] in {"1", "2"}
    finally:
        gateway.write(paths.MLOPS, artifact, original)


# ---------------------------------------------------------------------------------------------
# Prediction log


def logged(gateway: AzureStorage, model: str, *request_ids: str) -> list[dict[str, Any]]:
    """The prediction log lines of these requests flushed so far, in blob then line order."""
    try:
        blobs = gateway.list(paths.PREDICTIONS, f"{model}/")
    except NotFound:
        return []
    lines = []
    for blob in blobs:
        text = gateway.read(paths.PREDICTIONS, blob.name).data.decode()
        lines += [json.loads(line) for line in io.StringIO(text) if line.strip()]
    return [line for line in lines if line["request_id"] in request_ids]


def test_prediction_log_blobs_hold_the_rows_the_model_version_and_the_prediction_ids(
    api: Any, model: str, gateway: AzureStorage, rows: pd.DataFrame
) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    response = score(api, model, json=bodies(rows)["dataframe_records"], headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["x-request-id"] == request_id
    assert list(response.json()) == ["predictions", "prediction_ids", "probabilities", "model"]
    assert response.json()["prediction_ids"] == [f"{request_id}-{i}" for i in range(5)]
    version = int(response.headers["x-model-version"])

    lines = wait_for(lambda: logged(gateway, model, request_id), f"prediction log lines for request {request_id}",
                     timeout=20)
    assert len(lines) == 5
    assert all(list(line) == ["request_id", "prediction_id", "model", "version", "timestamp", "inputs", "outputs"]
               for line in lines)
    assert [line["prediction_id"] for line in lines] == response.json()["prediction_ids"]
    assert {(line["model"], line["version"]) for line in lines} == {(model, version)}
    assert [line["inputs"] for line in lines] == records_of(rows)
    assert [line["outputs"]["predictions"] for line in lines] == response.json()["predictions"]
    assert [line["outputs"]["probabilities"] for line in lines] == response.json()["probabilities"]


def test_client_prediction_ids_are_answered_and_land_in_the_prediction_log(
    api: Any, model: str, gateway: AzureStorage, rows: pd.DataFrame
) -> None:
    tag = uuid.uuid4().hex[:12]
    header_ids = [f"order-{tag}:{i}" for i in range(5)]
    params_ids = [f"txn.{tag}_{i}" for i in range(5)]
    by_header = score(api, model, data=rows.to_csv(index=False).encode(), headers={
        "content-type": "text/csv", "x-request-id": f"h-{tag}", "x-prediction-ids": ", ".join(header_ids)})
    by_params = score(api, model, json={**bodies(rows)["dataframe_split"], "params": {"ids": params_ids}},
                      headers={"x-request-id": f"p-{tag}"})
    for response, ids in ((by_header, header_ids), (by_params, params_ids)):
        assert response.status_code == 200, response.text[:500]
        assert response.json()["prediction_ids"] == ids

    def all_ten() -> list[dict[str, Any]]:
        found = logged(gateway, model, f"h-{tag}", f"p-{tag}")
        return found if len(found) == 10 else []

    lines = wait_for(all_ten, f"prediction log lines for requests h-{tag} and p-{tag}", timeout=20)
    by_request = {rid: [line["prediction_id"] for line in lines if line["request_id"] == rid]
                  for rid in (f"h-{tag}", f"p-{tag}")}
    assert by_request == {f"h-{tag}": header_ids, f"p-{tag}": params_ids}
    predictions = {line["prediction_id"]: line["outputs"]["predictions"] for line in lines}
    assert [predictions[i] for i in header_ids] == by_header.json()["predictions"]
    assert [predictions[i] for i in params_ids] == by_params.json()["predictions"]


def test_ids_that_break_a_rule_are_a_400_and_nothing_is_logged(
    api: Any, model: str, gateway: AzureStorage, rows: pd.DataFrame
) -> None:
    tag = uuid.uuid4().hex[:12]
    data = bodies(rows)["data"]
    message = error(score(api, model, json=data, headers={"x-request-id": f"a-{tag}", "x-prediction-ids": "a,b"}),
                    400, "BAD_REQUEST")
    assert "header x-prediction-ids has 2 ids for 5 rows" in message
    message = error(score(api, model, json=data, headers={"x-request-id": f"b-{tag}", "x-prediction-ids": "a,b,a,c,d"}),
                    400, "BAD_REQUEST")
    assert "repeats ids ['a']" in message
    both = {**data, "params": {"ids": list("abcde")}}
    message = error(score(api, model, json=both, headers={"x-request-id": f"c-{tag}", "x-prediction-ids": "a,b,c,d,e"}),
                    400, "BAD_REQUEST")
    assert "both header x-prediction-ids and params.ids" in message
    refused = score(api, model, json=data, headers={"x-request-id": f"d {tag}"})
    assert "header x-request-id ('d " in error(refused, 400, "BAD_REQUEST")
    assert "x-request-id" not in refused.headers
    # A scored request after them is logged; by then the refused ones would have been too.
    after = score(api, model, json=data, headers={"x-request-id": f"e-{tag}"})
    assert after.status_code == 200, after.text[:500]
    wait_for(lambda: logged(gateway, model, f"e-{tag}"), f"prediction log lines for request e-{tag}", timeout=20)
    assert not logged(gateway, model, *(f"{c}-{tag}" for c in "abc"), f"d {tag}")
