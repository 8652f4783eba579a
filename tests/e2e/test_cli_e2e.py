"""`mlops` against the real app in the local host on a private Azurite: every command's human and --json
output, exit codes 0/1/2/3, drops followed live to promoted and to rejected, and the upload SAS refused by
storage for anything but creating and writing its one blob.

The CLI runs in-process through main(argv) with captured stdout/stderr, and once as the installed console
script (.venv/bin/mlops) in a subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient

from devhost.azurite import ROOT, Azurite
from devhost.host import DevHost
from examples.datasets import diabetes
from mlops_cli.main import main
from tests.e2e.conftest import MASTER_KEY
from tests.e2e.support import example_spec, promoted_diabetes


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture
def cli(app_host: DevHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """main(argv) against the test host, keys from the environment, no profile file, no local settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLOPS_PROFILE", "MLOPS_URL", "MLOPS_KEY", "MLOPS_ADMIN_KEY", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_PROFILES", str(tmp_path / "no-profiles.toml"))
    monkeypatch.setenv("MLOPS_URL", f"http://127.0.0.1:{app_host.port}/api")
    monkeypatch.setenv("MLOPS_KEY", app_host.function_key or "")
    monkeypatch.setenv("MLOPS_ADMIN_KEY", MASTER_KEY)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    return run


def spec_file(folder: Path, name: str, **changes: Any) -> str:
    path = folder / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(example_spec("diabetes", name, **changes)))
    return str(path)


def data_file(folder: Path, rows: int | None = None, name: str = "data.csv") -> str:
    frame = diabetes() if rows is None else diabetes().head(rows)
    path = folder / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def promoted(azurite: Azurite, app_host: DevHost, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A diabetes model with a promoted champion (trained from data.csv), and a folder for files."""
    return {"model": promoted_diabetes(azurite.connection_string, "cli"), "folder": tmp_path_factory.mktemp("cli")}


def test_upload_spec_then_drop_wait_follows_the_run_to_promoted(cli: Cli, tmp_path: Path) -> None:
    model = f"cli-new-{uuid.uuid4().hex[:6]}"
    stored = cli("upload-spec", spec_file(tmp_path, model))
    assert stored.code == 0, stored.err
    assert f"stored the spec of {model}" in stored.out
    assert stored.err.startswith("→ MLOPS_URL (http://127.0.0.1:")  # the target of every change

    dropped = cli("drop", model, data_file(tmp_path), "--wait", "--timeout", "120")
    assert dropped.code == 0, dropped.err
    assert f"dropped datasets/{model}/data.csv" in dropped.err
    for stage in ("received", "prepared", "trained", "exported", "validated"):
        assert f"✓ {stage}" in dropped.err, dropped.err
    assert f"✓ promoted: {model} v1 is the champion" in dropped.out
    assert "✓ passed: rmse" in dropped.out


def test_reads_in_human_and_json_form(cli: Cli, promoted: dict[str, Any]) -> None:
    model = promoted["model"]
    listed = cli("models")
    assert listed.code == 0 and listed.out.splitlines()[0].split() == ["MODEL", "TASK", "CHAMPION", "PREVIOUS",
                                                                        "UPDATED"]
    assert any(line.split()[:3] == [model, "regression", "v1"] for line in listed.out.splitlines())
    assert {m["name"]: m["aliases"]["champion"] for m in cli("models", "--json").json()["models"]}[model] == 1

    versions = cli("versions", model)
    assert "v1       promoted (champion)" in versions.out and "rmse" in versions.out
    body = cli("versions", model, "--json").json()
    assert body["aliases"]["champion"] == 1 and body["versions"][0]["status"] == "promoted"

    shown = cli("show", model)  # no version: the champion
    assert shown.code == 0 and shown.out.startswith(f"{model} v1  promoted")
    assert "decision: promote" in shown.out and "signature" in shown.out and "datasets/" in shown.out
    assert cli("show", model, "1", "--json").json()["decision"]["outcome"] == "promote"

    runs = cli("runs", model, "--json").json()["runs"]
    assert [r["status"] for r in runs] == ["promoted"]
    assert runs[0]["run_id"] in cli("runs", model).out
    run = cli("run", model, runs[0]["run_id"])
    assert "✓ trained" in run.out and f"✓ promoted: {model} v1" in run.out
    assert cli("run", model, runs[0]["run_id"], "--json").json()["status"] == "promoted"
    waited = cli("run", model, runs[0]["run_id"], "--wait", "--json")
    assert waited.code == 0 and waited.json()["version"]["version"] == 1


def test_drop_wait_ends_rejected_with_the_data_problems_and_exit_1(cli: Cli, promoted: dict[str, Any]) -> None:
    model, folder = promoted["model"], promoted["folder"]
    few = data_file(folder, rows=40, name="few.csv")  # the spec's data_checks want 200 rows
    rejected = cli("drop", model, few, "--wait", "--timeout", "120")
    assert rejected.code == 1, rejected.err
    assert "✓ received" in rejected.err and "✗ prepared" in rejected.err
    assert "✗ rejected" in rejected.out and "200" in rejected.out, rejected.out
    assert f"report: datasets-rejected/{model}/few.csv.rejection.json" in rejected.out

    again = cli("drop", model, few, "--name", "few-again.csv", "--wait", "--json")
    assert again.code == 1
    body = again.json()
    assert body["blob"] == f"datasets/{model}/few-again.csv" and body["run"]["status"] == "rejected"
    assert body["bytes"] == Path(few).stat().st_size
    shown = cli("run", model, body["run"]["run_id"])  # a settled run exits as `run --wait` would
    assert shown.code == 1 and "rejected" in shown.out, shown.out
    assert cli("run", model, body["run"]["run_id"], "--json").code == 1


def test_a_second_drop_under_the_same_name_is_refused_unless_overwrite(cli: Cli, promoted: dict[str, Any]) -> None:
    model, folder = promoted["model"], promoted["folder"]
    refused = cli("drop", model, data_file(folder))
    assert refused.code == 1 and "--overwrite" in refused.err


def test_score_feedback_monitor_monitoring_and_simulate(cli: Cli, promoted: dict[str, Any]) -> None:
    model, folder = promoted["model"], promoted["folder"]
    rows = diabetes().drop(columns=["progression"]).head(2)
    request = folder / "rows.json"
    request.write_text(json.dumps({"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}))
    scored = cli("score", model, str(request))
    assert scored.code == 0 and scored.out.splitlines()[0].split() == ["ROW", "PREDICTION", "ID", "PREDICTION"]
    assert f"{model} v1" in scored.err
    body = cli("score", model, str(request), "--json").json()
    assert len(body["predictions"]) == 2 and body["model"]["version"] == 1

    labels = folder / "labels.json"
    labels.write_text(json.dumps({"labels": [{"prediction_id": i, "label": 100.0} for i in body["prediction_ids"]]}))
    sent = cli("feedback", model, str(labels))
    assert sent.code == 0 and "2 accepted" in sent.out
    assert cli("feedback", model, str(labels), "--json").json()["duplicates"] == 2

    monitored = cli("monitor", model)
    assert monitored.code == 0 and "decision:" in monitored.out and "dataset drift" in monitored.out
    assert cli("monitor", model, "--json").json()["model"] == model
    listed = cli("monitoring", model)
    assert listed.out.splitlines()[0].split()[:2] == ["WINDOW", "END"]
    assert cli("monitoring", model, "--json").json()["reports"][0]["version"] == 1

    simulated = cli("simulate", model, "--rows", "50", "--label-share", "0.2", "--dataset", "diabetes", "--json")
    assert simulated.code == 0, simulated.err
    assert simulated.json()["scored"] == 50 and simulated.json()["versions"] == [1]


def test_approve_reject_rollback_and_retrain_wait(cli: Cli, tmp_path: Path) -> None:
    model = f"cli-manual-{uuid.uuid4().hex[:6]}"
    assert cli("upload-spec", spec_file(tmp_path, model, approval="manual")).code == 0
    pending = cli("drop", model, data_file(tmp_path), "--wait")
    assert pending.code == 0 and f"! pending approval: {model} v1" in pending.out
    assert f"next: mlops approve {model} 1" in pending.out
    approved = cli("approve", model, "1", "--by", "e2e")
    assert approved.code == 0 and f"{model}: champion v1" in approved.out

    duplicate = cli("retrain", model, "--wait", "--json")  # same data, same spec: nothing new to train
    assert duplicate.code == 0 and duplicate.json()["run"]["status"] == "duplicate"

    changed = spec_file(tmp_path, model, approval="manual", estimator={"type": "ridge", "params": {"alpha": 2.0}})
    second = cli("upload-spec", changed, "--retrain", "--wait")
    assert second.code == 0 and f"! pending approval: {model} v2" in second.out
    assert cli("approve", model, "2", "--json").json() | {"message": ""} == {
        "champion": 2, "previous": 1, "changed": True, "message": ""}
    back = cli("rollback", model, "--json")
    assert back.code == 0 and back.json()["champion"] == 1

    third = spec_file(tmp_path, model, approval="manual", estimator={"type": "ridge", "params": {"alpha": 3.0}})
    assert cli("upload-spec", third, "--retrain", "--wait").code == 0
    rejected = cli("reject", model, "3", "--reason", "not now")
    assert rejected.code == 0 and f"{model} v3: rejected" in rejected.out
    again = cli("reject", model, "2", "--reason", "too late")  # approved once, no longer pending: the API refuses
    assert again.code == 1 and "(409 " in again.err and "cannot be rejected" in again.err


def test_exit_codes_for_usage_unreachable_keys_unknown_models_and_bad_specs(cli: Cli, promoted: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    model = promoted["model"]
    usage = cli("show", "Not.A.Model")
    assert usage.code == 2 and "lowercase letters" in usage.err
    assert cli("upload-spec", spec_file(tmp_path, model), "--wait").code == 2  # no run to wait for

    down = cli("models", "--url", "http://127.0.0.1:9/api")
    assert down.code == 3 and "cannot reach the API at http://127.0.0.1:9/api" in down.err and "make run" in down.err
    for url, words in (("localhost:7071/api", "needs http:// or https://"), ("ftp://x/api", "needs http://"),
                       ("http://[::1/api", "is not a URL"), ("http://h:port/api", "is not a URL")):
        malformed = cli("models", "--url", url)
        assert malformed.code == 2 and f"({url!r})" in malformed.err and words in malformed.err, malformed.err

    wrong = cli("models", "--key", "not-the-key")
    assert wrong.code == 3 and "the function key from the --key option was refused" in wrong.err
    no_admin = cli("retrain", model, "--admin-key", "nope")
    assert no_admin.code == 3 and "needs the admin key" in no_admin.err

    unknown = cli("versions", "no-such-model", "--json")
    assert unknown.code == 1 and "models: " in unknown.err and model in unknown.err
    assert unknown.json()["error"]["status"] == 404

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: {model}\ntask: regression\ntarget: y\nfeatures: []\nestimator: {{type: nope}}\n")
    refused = cli("upload-spec", str(bad))
    assert refused.code == 1 and "400 INVALID_SPEC" in refused.err
    assert "  features:" in refused.err and "  estimator.type:" in refused.err


def test_the_upload_route_checks_key_model_and_file_name(api: Any, promoted: dict[str, Any]) -> None:
    route = f"registry/models/{promoted['model']}/uploads"
    assert api("POST", route, json={"name": "x.csv"}).status_code == 401  # the function key is not enough
    for name, words in (("../x.csv", "'..'"), ("x.txt", "dataset suffix"), ("", "required")):
        answer = api("POST", route, key="master", json={"name": name})
        assert answer.status_code == 400 and words in answer.json()["message"], answer.text
    missing = api("POST", "registry/models/no-spec-here/uploads", key="master", json={"name": "x.csv"})
    assert missing.status_code == 404 and "spec (model=no-spec-here)" in missing.json()["message"]
    grant = api("POST", route, key="master", json={"name": "ok.csv"}).json()
    assert grant["blob"] == f"datasets/{promoted['model']}/ok.csv" and grant["permissions"] == "create,write"
    expires = datetime.fromisoformat(grant["expires"])
    assert timedelta(minutes=10) < expires - datetime.now(UTC) <= timedelta(minutes=15)


def _elsewhere(url: str, path: str) -> str:
    """The same SAS token on another blob path."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _refused(call: Callable[[], Any]) -> int:
    with pytest.raises(HttpResponseError) as refused:
        call()
    return int(refused.value.status_code or 0)


def test_the_sas_writes_its_one_blob_and_nothing_else(api: Any, promoted: dict[str, Any]) -> None:
    model = promoted["model"]
    grant = api("POST", f"registry/models/{model}/uploads", key="master", json={"name": "sas-probe.csv"}).json()
    url = grant["url"]
    account = urlsplit(url).path.split("/")[1]
    other_blob = _elsewhere(url, f"/{account}/datasets/{model}/other.csv")
    other_container = _elsewhere(url, f"/{account}/mlops/models/{model}/sas-probe.csv")
    assert _refused(lambda: BlobClient.from_blob_url(other_blob).upload_blob(b"a,b\n")) == 403
    assert _refused(lambda: BlobClient.from_blob_url(other_container).upload_blob(b"a,b\n")) == 403
    blob = BlobClient.from_blob_url(url)
    blob.upload_blob(b"age,sex\n1,2\n")  # its own blob: created
    assert _refused(lambda: blob.download_blob().readall()) == 403  # no read
    assert _refused(lambda: blob.delete_blob()) == 403  # no delete
    container = ContainerClient.from_container_url(_elsewhere(url, f"/{account}/datasets"))
    assert _refused(lambda: list(container.list_blobs())) == 403  # no list


def test_an_expired_sas_is_refused_by_storage(azurite: Azurite, promoted: dict[str, Any]) -> None:
    from shared.settings import Settings
    from shared.uploads import grant_upload

    settings = Settings.from_env({"AzureWebJobsStorage": azurite.connection_string})
    past = datetime.now(UTC) - timedelta(minutes=20)
    grant = grant_upload(settings, promoted["model"], "late.csv", now=past)  # expired 5 minutes ago
    assert grant.expires < datetime.now(UTC)
    assert _refused(lambda: BlobClient.from_blob_url(grant.url).upload_blob(b"a,b\n")) == 403


def test_the_console_script_runs_in_its_own_process(app_host: DevHost, promoted: dict[str, Any],
                                                    tmp_path: Path) -> None:
    script = ROOT / ".venv" / "bin" / "mlops"
    assert script.exists(), "make setup installs the mlops console script into .venv"
    env = {**os.environ, "MLOPS_URL": f"http://127.0.0.1:{app_host.port}/api", "MLOPS_KEY": app_host.function_key
           or "", "MLOPS_PROFILES": str(tmp_path / "none.toml"), "NO_COLOR": "1"}
    done = subprocess.run([str(script), "models", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert promoted["model"] in {m["name"] for m in json.loads(done.stdout)["models"]}
    usage = subprocess.run([str(script), "versions"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "the following arguments are required: model" in usage.stderr
