"""Bad input at every HTTP entry point of the running app: a clear 4xx (or 503 for configuration),
never a 500, and no answer that shows a storage endpoint, a local path or a traceback."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devhost.azurite import ROOT, Azurite, free_port, start_azurite
from devhost.host import DevHost
from examples.datasets import diabetes
from shared import paths
from shared.lifecycle.records import RunStatus
from shared.storage import AzureStorage
from tests.e2e.conftest import SAMPLE_SETTINGS
from tests.e2e.support import champion, example_spec, promoted_diabetes, wait_for_run
from tests.fixtures.devhost_support import HostProcess, wait_for

EVENTS = Path(__file__).parents[1] / "events"


@pytest.fixture(scope="module")
def model(app_host: DevHost, azurite: Azurite) -> str:
    """A diabetes model with a promoted champion, for the cases that need one."""
    return promoted_diabetes(azurite.connection_string, "bad")


def assert_nothing_leaks(response: requests.Response, *secrets: str) -> None:
    """No storage endpoint, local path or traceback in an answer (the app's own paths included)."""
    text = response.text
    for needle in (*secrets, str(ROOT), "Traceback", "File \"/", "127.0.0.1:", "devstoreaccount1"):
        assert needle not in text, f"{needle!r} leaked in {response.status_code}: {text[:300]}"


def check(response: requests.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], body
    assert_nothing_leaks(response)


# -- names and parameters -----------------------------------------------------------------------

# (method, route, master key?) with a model-name segment that is no model name
BAD_MODEL_ROUTES = [
    ("GET", "registry/models/{m}/versions", False),
    ("GET", "registry/models/{m}/aliases", False),
    ("GET", "registry/models/{m}/runs", False),
    ("POST", "registry/models/{m}/rollback", True),
    ("POST", "registry/models/{m}/retrain", True),
    ("PUT", "registry/models/{m}/spec", True),
    ("POST", "models/{m}/score", False),
]
# raw path segments: the client must not normalise them away, so they go percent-encoded
BAD_NAMES = ["%2e", "%2e%2e", "a.b", "UPPER", "-lead", "x" * 64, "%C3%A9t%C3%A9", "a%0a"]


@pytest.mark.parametrize("segment", BAD_NAMES)
@pytest.mark.parametrize(("method", "route", "master"), BAD_MODEL_ROUTES)
def test_a_model_name_that_breaks_the_rule_is_400_naming_the_rule(api, model, method, route, master, segment):
    response = api(method, route.format(m=segment), key="master" if master else "function", json={})
    check(response, 400, "INVALID_PARAMETER_VALUE", "model name", "lowercase letters")


@pytest.mark.parametrize(("query", "words"), [
    ("version=%D9%A3", ("version", "whole number")),  # Arabic-Indic three: str.isdigit() says yes
    ("version=%C2%B2", ("version", "whole number")),  # superscript two
    ("version=0", ("version",)),
    ("version=99999999999999999999", ("version",)),
    ("alias=history", ("alias", "champion, previous")),
    ("alias=__class__", ("alias",)),
    ("alias=champion&version=1", ("either",)),
])
def test_a_bad_version_or_alias_when_scoring_is_400(api, model, query, words):
    response = api("POST", f"models/{model}/score?{query}", json={"inputs": [[0.0] * 10]})
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert all(word in response.json()["message"] for word in words), response.text
    assert_nothing_leaks(response)


@pytest.mark.parametrize("run_id", ["a%20b", "x" * 81, "-x", "a.b", "..%2F..%2Fmodels"])
def test_a_bad_run_id_is_400(api, model, run_id):
    response = api("GET", f"registry/models/{model}/runs/{run_id}")
    if response.status_code == 404 and "%2F" in run_id:
        # the local host decodes %2F before routing, so no route matches: the host's 404, never a 500
        assert_nothing_leaks(response)
        return
    check(response, 400, "INVALID_PARAMETER_VALUE", "run id")


@pytest.mark.parametrize(("body", "words"), [
    ({"to": "\u00b2"}, ("rollback field 'to'",)),
    ({"to": True}, ("rollback field 'to'",)),
    ({"to": 10**12}, ("rollback field 'to'",)),
    ({"from": -1}, ("rollback field 'from'",)),
    ({"by": ["x"]}, ("field 'by' must be a string",)),
    ({"reason": "x" * 5000}, ("field 'reason'", "limit")),
    ({"to": 1, "bogus": 1}, ("unknown field",)),
])
def test_a_bad_rollback_body_is_400_and_changes_nothing(api, model, storage, body, words):
    before = champion(storage, model)
    check(api("POST", f"registry/models/{model}/rollback", key="master", json=body), 400, *_code_and(words))
    assert champion(storage, model) == before


def _code_and(words: tuple[str, ...]) -> tuple[str, ...]:
    code = "INVALID_PARAMETER_VALUE" if words[0].startswith("rollback field") else "BAD_REQUEST"
    return (code, *words)


def test_a_body_that_is_not_json_is_400(api, model):
    response = api("POST", f"registry/models/{model}/retrain", key="master", data=b"{not json",
                   headers={"Content-Type": "application/json"})
    check(response, 400, "BAD_REQUEST", "not valid JSON")


# -- spec upload ---------------------------------------------------------------------------------


def test_a_spec_over_the_size_cap_is_413(api, model):
    spec = example_spec("diabetes", model, description="x" * (300 * 1024))
    response = api("PUT", f"registry/models/{model}/spec", key="master", data=yaml.safe_dump(spec).encode(),
                   headers={"Content-Type": "application/yaml"})
    check(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(("text", "word"), [
    ("a: &x [1, 2]\nb: *x\n", "alias"),
    ("name: !!python/object:os.system ls\n", "tag"),
])
def test_a_spec_with_anchors_or_custom_tags_is_refused(api, model, text, word):
    response = api("PUT", f"registry/models/{model}/spec", key="master", data=text.encode(),
                   headers={"Content-Type": "application/yaml"})
    check(response, 400, "INVALID_SPEC")
    assert word in json.dumps(response.json()).lower()


def test_an_unbounded_hyperparameter_is_refused(api, model):
    spec = example_spec("diabetes", model, estimator={"type": "hist_gradient_boosting_regressor",
                                                      "params": {"max_leaf_nodes": 10**9}})
    response = api("PUT", f"registry/models/{model}/spec", key="master", data=yaml.safe_dump(spec).encode(),
                   headers={"Content-Type": "application/yaml"})
    check(response, 400, "INVALID_SPEC")
    assert "max_leaf_nodes" in json.dumps(response.json())


# -- scoring ---------------------------------------------------------------------------------------

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _csv(value: str) -> bytes:
    return (",".join(FEATURES) + "\n" + ",".join([value] + ["0.01"] * 9) + "\n").encode()


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999", "Infinity"])
def test_csv_and_json_refuse_non_finite_values_alike(api, model, value):
    as_csv = api("POST", f"models/{model}/score", data=_csv(value), headers={"Content-Type": "text/csv"})
    check(as_csv, 400, "BAD_REQUEST", "age")
    as_json = api("POST", f"models/{model}/score", data=b'{"dataframe_split": {"columns": ["age"], "data": [[1e999]]}}',
                  headers={"Content-Type": "application/json"})
    assert as_json.status_code == 400, as_json.text


@pytest.mark.parametrize("content_type", [
    "application/json; charset=latin-1",
    "text/csv; charset=utf-16",
    "application/json; format=pandas-split",
])
def test_mlflow_content_type_rules_answer_415(api, model, content_type):
    body = _csv("0.02") if content_type.startswith("text/csv") else json.dumps({"inputs": [[0.01] * 10]}).encode()
    check(api("POST", f"models/{model}/score", data=body, headers={"Content-Type": content_type}),
          415, "UNSUPPORTED_MEDIA_TYPE")


def test_unknown_top_level_keys_next_to_the_format_key_are_ignored_as_mlflow_does(api, model):
    body = {"dataframe_split": {"columns": FEATURES, "data": [[0.01] * 10]}, "client": "app-7"}
    response = api("POST", f"models/{model}/score", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


# -- data drops ------------------------------------------------------------------------------------


def test_a_drop_with_a_duplicate_column_header_is_rejected_with_a_report_and_the_champion_stays(storage, model):
    before = champion(storage, model)
    frame = diabetes()
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    header, rest = buf.getvalue().split("\n", 1)
    duplicated = header.replace(",bp,", ",bmi,")  # bp's values under a second 'bmi' header
    assert duplicated != header
    storage.write(paths.DATASETS, f"{model}/dup.csv", (duplicated + "\n" + rest).encode())

    run = wait_for_run(storage, model, "dup.csv")

    assert run.status == RunStatus.REJECTED, run
    report, _ = storage.read_json(paths.REJECTED, paths.rejection_report(f"{model}/dup.csv"))
    problem = next(p for p in report["problems"] if p["check"] == "duplicate_columns")
    assert "bmi" in json.dumps(problem)
    assert champion(storage, model) == before


def test_a_drop_under_a_folder_that_is_no_model_name_gets_a_report_under_a_safe_name(storage, app_host):
    storage.write(paths.DATASETS, "Bad.Model/data.csv", b"a,b\n1,2\n")
    reports = _wait_for_report(storage, "invalid-bad-model-")
    assert reports, "no rejection report for the misplaced drop"
    report, _ = storage.read_json(paths.REJECTED, reports[0])
    assert report["problems"][0]["check"] == "location"
    assert "is not a model name" in report["problems"][0]["message"]


def _wait_for_report(storage: AzureStorage, prefix: str) -> list[str]:
    def found() -> list[str] | None:
        return [b.name for b in storage.list(paths.REJECTED, prefix)] or None

    return wait_for(found, "a rejection report", timeout=60)


# -- health ----------------------------------------------------------------------------------------


def test_anonymous_health_says_ok_and_nothing_else(api):
    response = api("GET", "health", key=None)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_health_details_need_the_admin_key(api, azurite):
    assert api("GET", "health/details", key=None).status_code == 401
    assert api("GET", "health/details", key="function").status_code == 401
    details = api("GET", "health/details", key="master")
    assert details.status_code == 200, details.text
    assert details.json()["storage"]["status"] == "ok"
    assert str(azurite.blob_port) in details.json()["storage"]["endpoint"]


# -- configuration: the shipped sample settings ----------------------------------------------------


@dataclass
class SampleHost:
    process: HostProcess
    port: int


@pytest.fixture(scope="module")
def sample_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleHost]:
    """`python -m devhost` with local.settings.sample.json as shipped (MLOPS_GIT_LOCAL_PATH empty), on its
    own Azurite: a process of its own, since settings are read once per process."""
    location = tmp_path_factory.mktemp("sample-azurite")
    own = start_azurite(location, log_path=location / "azurite.log")
    port = free_port()
    # the sample's Values win over whatever this test process has in its environment
    env = {**_sample_values(), "AzureWebJobsStorage": own.connection_string, "AzureFunctionsWebHost__hostid": "sample"}
    process = HostProcess(["--app-dir", str(ROOT), "--port", str(port), "--settings", str(SAMPLE_SETTINGS),
                           "--grace", "1"], env)
    try:
        process.wait_output("Host started", timeout=90)
        yield SampleHost(process, port)
    finally:
        process.kill()
        own.stop()


def _sample_values() -> dict[str, Any]:
    return json.loads(SAMPLE_SETTINGS.read_text())["Values"]


def _post(host: SampleHost, route: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{host.port}/api/{route}", data=body, headers=headers, timeout=60)


def test_a_github_push_under_the_sample_settings_is_503_naming_the_missing_setting(sample_host):
    host = sample_host
    data = json.loads((EVENTS / "github_push.json").read_text())
    data.update(ref="refs/heads/main")
    body = json.dumps(data).encode()
    secret = _sample_values()["MLOPS_GITHUB_WEBHOOK_SECRET"]
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    response = _post(host, "webhooks/github", body, {"Content-Type": "application/json", "X-GitHub-Event": "push",
                                                     "X-GitHub-Delivery": str(uuid.uuid4()),
                                                     "X-Hub-Signature-256": signature})
    check(response, 503, "CONFIGURATION", "MLOPS_GIT_LOCAL_PATH is not set")


def test_an_azure_devops_push_under_the_sample_settings_is_503_naming_the_missing_setting(sample_host):
    host = sample_host
    data = json.loads((EVENTS / "azure_devops_git_push.json").read_text())
    data["resource"]["refUpdates"][0]["name"] = "refs/heads/main"
    response = _post(host, "webhooks/azure-devops", json.dumps(data).encode(),
                     {"Content-Type": "application/json",
                      "X-Webhook-Secret": _sample_values()["MLOPS_ADO_WEBHOOK_SECRET"]})
    check(response, 503, "CONFIGURATION", "MLOPS_GIT_LOCAL_PATH is not set")


def test_the_host_log_names_the_missing_setting_at_start(sample_host):
    host = sample_host
    assert "MLOPS_GIT_LOCAL_PATH is not set" in host.process.output
