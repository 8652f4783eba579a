"""Git webhooks end to end: a signed push to a real local spec repository retrains at that commit."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import registry, runs
from shared.lifecycle.records import RunRecord, RunStatus
from tests.e2e.conftest import ADO_SECRET, GITHUB_SECRET, git
from tests.e2e.support import champion, example_spec, promoted_diabetes, wait_for_run_id

EVENTS = Path(__file__).parents[1] / "events"


def event(name: str) -> dict[str, Any]:
    """A captured payload from tests/events, as a fresh dict."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def sign(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, kind: str = "push", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": kind,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
    }


def commit_spec(repo: Path, spec: dict[str, Any]) -> tuple[str, str]:
    """Commit specs/<name>.yaml on main; returns (path, commit sha)."""
    path = f"specs/{spec['name']}.yaml"
    (repo / "specs").mkdir(exist_ok=True)
    (repo / path).write_text(yaml.safe_dump(spec))
    git(repo, "add", path)
    git(repo, "commit", "-qm", f"{spec['name']}: update spec")
    return path, git(repo, "rev-parse", "HEAD")


def push_payload(sha: str, path: str) -> bytes:
    """The captured GitHub push rewritten to one commit on main touching one spec."""
    data = event("github_push")
    data.update(ref="refs/heads/main", after=sha, deleted=False, forced=False)
    commit = {**data["commits"][0], "id": sha, "added": [], "removed": [], "modified": [path]}
    data["commits"] = [commit]
    data["head_commit"] = commit
    return json.dumps(data).encode()


def run_ids(storage, model: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.run_id for r in runs.list_runs(storage, model)}


def finished(storage, model: str, run_id: str) -> RunRecord:  # type: ignore[no-untyped-def]
    """Poll one run until it reaches a terminal status."""
    return wait_for_run_id(storage, model, run_id, timeout=120)


def ridge(model: str, alpha: float) -> dict[str, Any]:
    return example_spec("diabetes", model, estimator={"type": "ridge", "params": {"alpha": alpha}})


@pytest.fixture(scope="module")
def model(app_host, azurite) -> str:  # type: ignore[no-untyped-def]
    """A diabetes model with data and a promoted champion, shared by this module's tests."""
    return promoted_diabetes(azurite.connection_string, "wh")


def test_a_signed_push_to_main_retrains_the_touched_model_at_that_commit(storage, spec_repo, api, model):
    before = run_ids(storage, model)
    path, sha = commit_spec(spec_repo, ridge(model, 0.5))
    body = push_payload(sha, path)

    response = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body))

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["status"] == "accepted" and result["commit"] == sha
    [entry] = result["specs"]
    assert entry["model"] == model and entry["path"] == path and entry["status"] == "queued"
    run = finished(storage, model, entry["run_id"])
    assert run.status in {RunStatus.PROMOTED, RunStatus.REJECTED}, run
    assert run_ids(storage, model) - before == {entry["run_id"]}
    version = registry.get_version(storage, model, run.version)
    assert version.run_id == run.run_id and str(version.status) == str(run.status)
    assert version.lineage["git"]["commit"] == sha
    assert version.lineage["git"]["path"] == path
    assert version.lineage["spec_hash"] == entry["spec_hash"]


def test_a_redelivered_push_is_acknowledged_as_duplicate_and_trains_nothing(storage, spec_repo, api, model):
    path, sha = commit_spec(spec_repo, ridge(model, 2.0))
    body = push_payload(sha, path)
    headers = github_headers(body)
    first = api("POST", "webhooks/github", key=None, data=body, headers=headers)
    assert first.status_code == 202, first.text
    finished(storage, model, first.json()["specs"][0]["run_id"])
    versions, run_count = len(registry.list_versions(storage, model)), len(run_ids(storage, model))

    again = api("POST", "webhooks/github", key=None, data=body, headers=headers)

    assert 200 <= again.status_code < 300, again.text
    assert again.json()["status"] == "duplicate"
    assert headers["X-GitHub-Delivery"] in again.json()["detail"]
    assert len(registry.list_versions(storage, model)) == versions
    assert len(run_ids(storage, model)) == run_count


def test_ping_answers_pong(api, app_host):
    body = json.dumps(event("github_ping")).encode()

    response = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body, "ping"))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pong"


@pytest.mark.parametrize(("kind", "template", "reason"), [
    ("push", "github_push_tag", "tag push refs/tags/v1.4.0 is ignored"),
    ("push", "github_push_branch_delete", "branch deletion refs/heads/feature/tune-churn is ignored"),
    ("push", "github_push_other_branch", "push to refs/heads/dev, configured branch is main"),
    ("issues", "github_push", "event 'issues' is not handled"),
])
def test_deliveries_that_ask_for_no_work_are_ignored_with_a_reason(api, app_host, kind, template, reason):
    body = json.dumps(event(template)).encode()

    response = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body, kind))

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["reason"]


def _bad(body: bytes, **changes: str | None) -> tuple[bytes, dict[str, str]]:
    headers: dict[str, str | None] = {**github_headers(body), **changes}
    return body, {k: v for k, v in headers.items() if v is not None}


@pytest.mark.parametrize(("case", "status", "code", "message"), [
    ("missing signature", 401, "UNAUTHORIZED", "missing X-Hub-Signature-256 header"),
    ("wrong signature", 401, "UNAUTHORIZED", "X-Hub-Signature-256 does not match the body"),
    ("missing event header", 400, "BAD_REQUEST", "missing X-GitHub-Event header"),
    ("invalid JSON", 400, "BAD_REQUEST", "payload is not valid JSON"),
    ("body over 1 MiB", 413, "PAYLOAD_TOO_LARGE", "the limit is 1048576"),
])
def test_bad_deliveries_are_refused_and_store_nothing(storage, spec_repo, api, model, case, status, code, message):
    path, sha = commit_spec(spec_repo, ridge(model, 7.0 + len(case)))
    good = push_payload(sha, path)
    spec_before, runs_before = registry.current_spec(storage, model)[1], run_ids(storage, model)
    body, headers = {
        "missing signature": lambda: _bad(good, **{"X-Hub-Signature-256": None}),
        "wrong signature": lambda: _bad(good, **{"X-Hub-Signature-256": sign(good, "not-the-secret")}),
        "missing event header": lambda: _bad(good, **{"X-GitHub-Event": None}),
        "invalid JSON": lambda: _bad(good[:-1]),
        "body over 1 MiB": lambda: _bad(good[:-1] + b', "pad": "' + b"x" * (1024 * 1024) + b'"}'),
    }[case]()

    response = api("POST", "webhooks/github", key=None, data=body, headers=headers)

    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    assert message in response.json()["message"]
    assert registry.current_spec(storage, model)[1] == spec_before
    assert run_ids(storage, model) == runs_before


def test_an_invalid_spec_at_the_commit_is_recorded_as_a_rejected_run_and_the_champion_stays(
        storage, spec_repo, api, model):
    champ = champion(storage, model)
    spec_before = registry.current_spec(storage, model)[1]
    path, sha = commit_spec(spec_repo, example_spec("diabetes", model, estimator={"type": "eval", "params": {}}))
    body = push_payload(sha, path)

    response = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body))

    assert response.status_code == 202, response.text
    [entry] = response.json()["specs"]
    assert entry["status"] == "rejected" and entry["errors"]
    run = api("GET", f"registry/models/{model}/runs/{entry['run_id']}", key="function")
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "rejected"
    assert run.json()["git"]["commit"] == sha
    assert "estimator" in json.dumps(run.json()["validation_errors"])
    assert champion(storage, model) == champ
    assert registry.current_spec(storage, model)[1] == spec_before


def ado_push(sha: str) -> bytes:
    data = event("azure_devops_git_push")
    data["id"] = str(uuid.uuid4())
    data["resource"]["refUpdates"][0].update(name="refs/heads/main", newObjectId=sha)
    data["resource"]["commits"][0]["commitId"] = sha
    return json.dumps(data).encode()


def test_an_azure_devops_push_with_the_shared_secret_queues_a_run(storage, spec_repo, api, model):
    path, sha = commit_spec(spec_repo, ridge(model, 3.0))
    body = ado_push(sha)

    response = api("POST", "webhooks/azure-devops", key=None, data=body,
                   headers={"Content-Type": "application/json", "X-Webhook-Secret": ADO_SECRET})

    assert response.status_code == 202, response.text
    [entry] = [s for s in response.json()["specs"] if s["model"] == model]
    assert entry["status"] == "queued" and entry["path"] == path
    run = finished(storage, model, entry["run_id"])
    assert registry.get_version(storage, model, run.version).lineage["git"]["commit"] == sha


def test_an_azure_devops_push_with_the_wrong_secret_is_refused(storage, spec_repo, api, model):
    path, sha = commit_spec(spec_repo, ridge(model, 4.0))
    runs_before = run_ids(storage, model)

    response = api("POST", "webhooks/azure-devops", key=None, data=ado_push(sha),
                   headers={"Content-Type": "application/json", "X-Webhook-Secret": "wrong"})

    assert response.status_code == 401, response.text
    assert response.json()["error_code"] == "UNAUTHORIZED"
    assert "X-Webhook-Secret header does not match" in response.json()["message"]
    assert run_ids(storage, model) == runs_before


def test_a_delivery_id_that_climbs_folders_is_hashed_before_it_names_a_blob(storage, spec_repo, api, model):
    path, sha = commit_spec(spec_repo, ridge(model, 11.0))
    body = push_payload(sha, path)
    delivery = "../../../models/" + model

    first = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body, delivery=delivery))
    again = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body, delivery=delivery))

    assert first.status_code == 202, first.text
    assert again.status_code == 202 and again.json()["status"] == "duplicate", again.text  # same hashed key
    names = [b.name for b in storage.list("mlops", "")]
    assert not [n for n in names if ".." in n.split("/")], names
    assert any(n.startswith("idempotency/delivery/github-sha256-") for n in names)


@pytest.mark.parametrize("provider", ["github", "azure-devops"])
def test_a_push_from_another_repository_is_ignored_with_the_reason(storage, spec_repo, api, model, provider):
    path, sha = commit_spec(spec_repo, ridge(model, 12.0 if provider == "github" else 13.0))
    runs_before = run_ids(storage, model)
    if provider == "github":
        data = json.loads(push_payload(sha, path))
        data["repository"]["full_name"] = "mallory/ml-specs"
        body = json.dumps(data).encode()
        headers = github_headers(body)
    else:
        data = json.loads(ado_push(sha))
        data["resource"]["repository"].update(name="other-repo", id=str(uuid.uuid4()))
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json", "X-Webhook-Secret": ADO_SECRET}

    response = api("POST", f"webhooks/{provider}", key=None, data=body, headers=headers)

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "ignored"
    assert "configured repository is" in response.json()["reason"]
    assert run_ids(storage, model) == runs_before


def test_a_pushed_commit_that_is_not_an_object_id_is_400(storage, api, model):
    data = json.loads(push_payload("0" * 39 + "1", "specs/x.yaml"))
    data["after"] = "HEAD:../../etc"
    body = json.dumps(data).encode()

    response = api("POST", "webhooks/github", key=None, data=body, headers=github_headers(body))

    assert response.status_code == 400, response.text
    assert "is not a git commit id" in response.json()["message"]
