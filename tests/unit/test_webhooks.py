"""Webhook authentication and payload parsing against captured-style GitHub and Azure DevOps bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from shared import settings
from shared.errors import BadRequest, PayloadTooLarge, PipelineError, Unauthorized, UnsupportedMediaType
from shared.webhooks import (
    GITHUB_MAX_COMMITS,
    MAX_BODY_BYTES,
    Ignored,
    Ping,
    PushEvent,
    is_spec_path,
    parse_azure_devops,
    parse_github,
    specs_to_fetch,
    verify_azure_devops,
    verify_github_signature,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
AFTER = "e7d2b4a61c3f5e8d9a0b1c2d3e4f5a6b7c8d9e0f"


def event_bytes(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def event_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event_bytes(name))
    return data


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_push(payload: dict[str, Any], branch: str = "main") -> PushEvent | Ignored | Ping:
    return parse_github("push", DELIVERY, json.dumps(payload).encode(), branch)


# --------------------------------------------------------------------------- GitHub signature


def test_github_documented_test_vector_verifies() -> None:
    verify_github_signature(
        "It's a Secret to Everybody",
        b"Hello, World!",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )


def test_signature_of_a_captured_push_verifies() -> None:
    body = event_bytes("github_push.json")
    verify_github_signature("s3cret", body, sign("s3cret", body))


def test_signature_hex_is_accepted_in_upper_case() -> None:
    body = b"{}"
    verify_github_signature("s3cret", body, sign("s3cret", body).upper().replace("SHA256=", "sha256="))


def test_tampered_body_is_unauthorized() -> None:
    body = event_bytes("github_push.json")
    header = sign("s3cret", body)
    with pytest.raises(Unauthorized) as err:
        verify_github_signature("s3cret", body.replace(b"dana-ds", b"mallory"), header)
    assert err.value.status == 401
    assert "does not match the body" in err.value.message


def test_wrong_secret_is_unauthorized() -> None:
    body = b'{"zen": "x"}'
    with pytest.raises(Unauthorized, match="does not match the body"):
        verify_github_signature("s3cret", body, sign("other", body))


def test_missing_signature_header_is_unauthorized_and_says_what_to_configure() -> None:
    with pytest.raises(Unauthorized) as err:
        verify_github_signature("s3cret", b"{}", None)
    assert err.value.status == 401
    assert "missing X-Hub-Signature-256" in err.value.message
    assert settings.GITHUB_WEBHOOK_SECRET in err.value.message


@pytest.mark.parametrize("header", ["sha1=" + "a" * 40, "sha256=xyz", "757107ea0eb2509fc2", "sha256=" + "é" * 64])
def test_malformed_signature_header_is_unauthorized(header: str) -> None:
    with pytest.raises(Unauthorized, match="malformed X-Hub-Signature-256"):
        verify_github_signature("s3cret", b"{}", header)


def test_unset_secret_refuses_every_delivery() -> None:
    with pytest.raises(Unauthorized, match=f"set {settings.GITHUB_WEBHOOK_SECRET}"):
        verify_github_signature("", b"{}", sign("", b"{}"))


# --------------------------------------------------------------------------- GitHub parsing


def test_push_to_configured_branch_becomes_a_push_event() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main")
    assert event == PushEvent(
        provider="github",
        repository="contoso/ml-specs",
        ref="refs/heads/main",
        branch="main",
        commit=AFTER,
        delivery_id=DELIVERY,
        pusher="dana-ds",
        changed_paths=frozenset({"specs/churn.yaml", "specs/fraud.yml", "README.md", "notebooks/eda.ipynb"}),
        removed_paths=frozenset({"specs/legacy-ltv.json", "specs/scratch.yaml"}),
    )


def test_a_file_added_then_removed_in_one_push_counts_as_removed() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main")
    assert isinstance(event, PushEvent)
    assert "specs/scratch.yaml" in (event.removed_paths or ())
    assert "specs/scratch.yaml" not in (event.changed_paths or ())


def test_configured_branch_may_be_given_as_a_full_ref() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "refs/heads/main")
    assert isinstance(event, PushEvent) and event.branch == "main"


def test_ping_is_recognised() -> None:
    assert parse_github("ping", DELIVERY, event_bytes("github_ping.json"), "main") == Ping(
        delivery_id=DELIVERY, hook_id=512340987, zen="Design for failure."
    )


def test_tag_push_is_ignored() -> None:
    result = parse_github("push", DELIVERY, event_bytes("github_push_tag.json"), "main")
    assert isinstance(result, Ignored)
    assert result.reason.startswith("tag push refs/tags/v1.4.0")
    assert result.delivery_id == DELIVERY


def test_branch_deletion_is_ignored() -> None:
    result = parse_github("push", DELIVERY, event_bytes("github_push_branch_delete.json"), "main")
    assert isinstance(result, Ignored)
    assert result.reason.startswith("branch deletion refs/heads/feature/tune-churn")


def test_deletion_of_the_configured_branch_is_ignored_too() -> None:
    payload = event_json("github_push_branch_delete.json") | {"ref": "refs/heads/main"}
    result = github_push(payload)
    assert isinstance(result, Ignored) and result.reason.startswith("branch deletion refs/heads/main")


def test_push_to_another_branch_is_ignored_naming_both_branches() -> None:
    result = parse_github("push", DELIVERY, event_bytes("github_push_other_branch.json"), "main")
    assert result == Ignored("push to refs/heads/dev, configured branch is main", DELIVERY)


def test_other_events_are_ignored_without_parsing_the_body() -> None:
    result = parse_github("issues", DELIVERY, b"not even json", "main")
    assert isinstance(result, Ignored)
    assert result.reason.startswith("event 'issues' is not handled")


def test_push_from_another_repository_is_ignored_when_a_repository_is_configured() -> None:
    result = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main", repository="contoso/other")
    assert isinstance(result, Ignored)
    assert result.reason == "push to repository contoso/ml-specs, configured repository is contoso/other"


def test_repository_match_is_case_insensitive() -> None:
    result = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main", repository="Contoso/ML-Specs")
    assert isinstance(result, PushEvent)


def test_missing_event_header_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as err:
        parse_github(None, DELIVERY, event_bytes("github_push.json"), "main")
    assert err.value.status == 400
    assert "missing X-GitHub-Event" in err.value.message


def test_invalid_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as err:
        parse_github("push", DELIVERY, b'{"ref": "refs/heads/main",', "main")
    assert err.value.status == 400
    assert "not valid JSON" in err.value.message


def test_json_that_is_not_an_object_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        parse_github("push", DELIVERY, b"[]", "main")


def test_push_without_a_repository_is_a_bad_request_naming_the_field() -> None:
    payload = event_json("github_push.json")
    del payload["repository"]
    with pytest.raises(BadRequest) as err:
        github_push(payload)
    assert err.value.message == "GitHub push payload is malformed: repository: Field required"
    assert err.value.details


def test_form_encoded_delivery_says_to_switch_the_content_type() -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        parse_github("push", DELIVERY, b"payload=%7B%22ref%22%3A%22x%22%7D", "main")
    assert err.value.status == 415
    assert "application/json" in err.value.message


def test_body_over_the_limit_is_payload_too_large() -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    with pytest.raises(PayloadTooLarge) as err:
        parse_github("push", DELIVERY, body, "main")
    assert err.value.status == 413


def test_absent_commits_list_means_changed_paths_unknown() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push_commits_absent.json"), "main")
    assert isinstance(event, PushEvent)
    assert event.changed_paths is None and event.removed_paths is None
    assert event.commit == "8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a"


def test_empty_commits_list_on_a_new_branch_means_changed_paths_unknown() -> None:
    payload = event_json("github_push.json") | {"commits": [], "created": True}
    event = github_push(payload)
    assert isinstance(event, PushEvent) and event.changed_paths is None


def slim_commits(count: int) -> list[dict[str, Any]]:
    """Commits with only the fields the parser reads, so `count` of them fit under MAX_BODY_BYTES."""
    return [{"id": f"{i:040x}", "added": [], "removed": [], "modified": ["specs/churn.yaml"]} for i in range(count)]


def test_commit_list_at_githubs_cap_is_treated_as_truncated() -> None:
    payload = event_json("github_push.json") | {"commits": slim_commits(GITHUB_MAX_COMMITS)}
    payload["head_commit"] = payload["commits"][-1]
    event = github_push(payload)
    assert isinstance(event, PushEvent) and event.changed_paths is None


def test_commit_list_just_under_the_cap_is_trusted() -> None:
    payload = event_json("github_push.json") | {"commits": slim_commits(GITHUB_MAX_COMMITS - 1)}
    payload["head_commit"] = payload["commits"][-1]
    event = github_push(payload)
    assert isinstance(event, PushEvent) and event.changed_paths == frozenset({"specs/churn.yaml"})


def test_a_realistic_push_at_githubs_commit_cap_is_refused_by_max_body_bytes() -> None:
    # Known limit: ~550 bytes per real commit entry x 2048 > 1 MiB, so such a push gets 413
    # before truncation handling can help. Raise MAX_BODY_BYTES if large pushes matter.
    payload = event_json("github_push.json")
    payload["commits"] = [payload["commits"][0] | {"id": f"{i:040x}"} for i in range(GITHUB_MAX_COMMITS)]
    with pytest.raises(PayloadTooLarge):
        github_push(payload)


def test_a_commit_at_the_per_commit_file_cap_makes_changed_paths_unknown() -> None:
    payload = event_json("github_push.json")
    payload["commits"][0]["added"] = [f"data/{i}.csv" for i in range(3000)]
    event = github_push(payload)
    assert isinstance(event, PushEvent) and event.changed_paths is None


def test_force_push_makes_changed_paths_unknown() -> None:
    event = github_push(event_json("github_push.json") | {"forced": True})
    assert isinstance(event, PushEvent) and event.changed_paths is None


def test_head_commit_missing_from_commits_is_included() -> None:
    payload = event_json("github_push.json")
    payload["head_commit"] = payload["commits"][1] | {"id": "f" * 40, "added": ["specs/extra.yaml"], "removed": []}
    event = github_push(payload)
    assert isinstance(event, PushEvent) and "specs/extra.yaml" in (event.changed_paths or ())


# --------------------------------------------------------------------------- specs_to_fetch


def test_specs_to_fetch_returns_touched_specs_and_never_removed_ones() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main")
    assert isinstance(event, PushEvent)
    assert specs_to_fetch(event, "specs") == ["specs/churn.yaml", "specs/fraud.yml"]


def test_specs_to_fetch_accepts_folder_spellings() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main")
    assert isinstance(event, PushEvent)
    assert (
        specs_to_fetch(event, "./specs/") == specs_to_fetch(event, "/specs") == ["specs/churn.yaml", "specs/fraud.yml"]
    )


def test_specs_to_fetch_is_empty_when_no_spec_changed() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push.json"), "main")
    assert isinstance(event, PushEvent)
    assert specs_to_fetch(event, "models") == []


def test_specs_to_fetch_is_none_when_changes_are_unknown() -> None:
    event = parse_github("push", DELIVERY, event_bytes("github_push_commits_absent.json"), "main")
    assert isinstance(event, PushEvent)
    assert specs_to_fetch(event, "specs") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("specs/churn.yaml", True),
        ("specs/team-a/churn.YML", True),
        ("specs/fraud.json", True),
        ("specs/notes.md", False),
        ("specsx/churn.yaml", False),
        ("other/specs/churn.yaml", False),
        ("specs/../secrets.yaml", False),
        ("specs//churn.yaml", False),
    ],
)
def test_is_spec_path(path: str, expected: bool) -> None:
    assert is_spec_path(path, "specs") is expected


@pytest.mark.parametrize("folder", ["", "/", "../specs", "specs/../.."])
def test_specs_folder_must_be_a_folder_inside_the_repository(folder: str) -> None:
    with pytest.raises(PipelineError, match=settings.GIT_SPECS_FOLDER):
        is_spec_path("specs/churn.yaml", folder)


# --------------------------------------------------------------------------- Azure DevOps parsing


def test_ado_push_to_configured_branch_becomes_a_push_event_with_unknown_paths() -> None:
    event = parse_azure_devops(event_bytes("azure_devops_git_push.json"), "main")
    assert event == PushEvent(
        provider="azure-devops",
        repository="https://contoso@dev.azure.com/contoso/MLOps/_git/ml-specs",
        ref="refs/heads/main",
        branch="main",
        commit="9b1e2d4c6a8f0e2d4c6b8a0f2e4d6c8b0a2f4e6d",
        delivery_id="8c2f1e4a-3b5d-4c6e-9f7a-0b1c2d3e4f5a",
        pusher="Dana Data",
        changed_paths=None,
        removed_paths=None,
    )


def test_ado_push_to_another_branch_is_ignored() -> None:
    payload = event_json("azure_devops_git_push.json")
    payload["resource"]["refUpdates"][0]["name"] = "refs/heads/dev"
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert result == Ignored(
        "push to refs/heads/dev, configured branch is main", "8c2f1e4a-3b5d-4c6e-9f7a-0b1c2d3e4f5a"
    )


def test_ado_branch_deletion_is_ignored() -> None:
    payload = event_json("azure_devops_git_push.json")
    payload["resource"]["refUpdates"][0]["newObjectId"] = "0" * 40
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored) and result.reason.startswith("branch deletion refs/heads/main")


def test_ado_tag_push_is_ignored() -> None:
    payload = event_json("azure_devops_git_push.json")
    payload["resource"]["refUpdates"][0]["name"] = "refs/tags/v2"
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored) and result.reason.startswith("tag push refs/tags/v2")


def test_ado_push_updating_several_refs_picks_the_configured_branch() -> None:
    payload = event_json("azure_devops_git_push.json")
    main = payload["resource"]["refUpdates"][0]
    payload["resource"]["refUpdates"] = [main | {"name": "refs/heads/dev", "newObjectId": "1" * 40}, main]
    event = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(event, PushEvent) and event.commit == main["newObjectId"]


def test_ado_push_with_minimal_resource_details_is_a_bad_request_saying_to_send_all() -> None:
    with pytest.raises(BadRequest) as err:
        parse_azure_devops(event_bytes("azure_devops_git_push_minimal.json"), "main")
    assert err.value.status == 400
    assert "pushId=1188" in err.value.message
    assert "'Minimal'" in err.value.message and "set 'Resource details to send' to 'All'" in err.value.message


def test_ado_push_without_commits_or_repository_still_works() -> None:
    payload = event_json("azure_devops_git_push.json")
    del payload["resource"]["commits"], payload["resource"]["repository"], payload["resource"]["pushedBy"]
    event = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(event, PushEvent)
    assert (event.repository, event.pusher, event.changed_paths) == ("", None, None)
    # with a repository filter set, a push that names no repository cannot show it passes: ignored, said why
    ignored = parse_azure_devops(json.dumps(payload).encode(), "main", repository="ml-specs")
    assert isinstance(ignored, Ignored)
    assert ignored.reason == "push to repository (none named), configured repository is ml-specs"


def test_ado_push_from_another_repository_is_ignored_when_a_repository_is_configured() -> None:
    result = parse_azure_devops(event_bytes("azure_devops_git_push.json"), "main", repository="other-repo")
    assert isinstance(result, Ignored) and "configured repository is other-repo" in result.reason
    same = parse_azure_devops(event_bytes("azure_devops_git_push.json"), "main", repository="ML-SPECS")
    assert isinstance(same, PushEvent)


def test_ado_completed_pull_request_merge_becomes_a_push_event() -> None:
    event = parse_azure_devops(event_bytes("azure_devops_git_pullrequest_merged.json"), "main")
    assert event == PushEvent(
        provider="azure-devops",
        repository="https://contoso@dev.azure.com/contoso/MLOps/_git/ml-specs",
        ref="refs/heads/main",
        branch="main",
        commit="4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f",
        delivery_id="b4c5d6e7-f8a9-4b0c-9d1e-2f3a4b5c6d7e",
        pusher="Dana Data",
        changed_paths=None,
        removed_paths=None,
    )


def test_ado_merge_attempt_on_an_open_pull_request_is_ignored() -> None:
    payload = event_json("azure_devops_git_pullrequest_merged.json")
    payload["resource"]["status"] = "active"
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored)
    assert result.reason == "pull request 212 merge attempt with status=active is not a completed merge"


def test_ado_merge_with_conflicts_is_ignored() -> None:
    payload = event_json("azure_devops_git_pullrequest_merged.json")
    payload["resource"]["mergeStatus"] = "conflicts"
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored) and "merge status is conflicts" in result.reason


def test_ado_pull_request_into_another_branch_is_ignored() -> None:
    payload = event_json("azure_devops_git_pullrequest_merged.json")
    payload["resource"]["targetRefName"] = "refs/heads/release"
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored)
    assert result.reason == "pull request 212 targets refs/heads/release, configured branch is main"


def test_ado_pull_request_with_minimal_resource_details_is_a_bad_request_explaining_why() -> None:
    with pytest.raises(BadRequest) as err:
        parse_azure_devops(event_bytes("azure_devops_git_pullrequest_merged_minimal.json"), "main")
    assert err.value.status == 400
    assert "pull request 213" in err.value.message
    assert "does not call the Azure DevOps API back" in err.value.message


def test_ado_completed_pull_request_without_merge_commit_is_a_bad_request() -> None:
    payload = event_json("azure_devops_git_pullrequest_merged.json")
    del payload["resource"]["lastMergeCommit"]
    with pytest.raises(BadRequest, match="has no lastMergeCommit"):
        parse_azure_devops(json.dumps(payload).encode(), "main")


def test_ado_other_event_types_are_ignored() -> None:
    payload = event_json("azure_devops_git_push.json") | {"eventType": "workitem.updated"}
    result = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(result, Ignored) and result.reason.startswith("event 'workitem.updated' is not handled")


def test_ado_resource_details_none_is_a_bad_request() -> None:
    payload = event_json("azure_devops_git_push.json") | {"resource": None}
    with pytest.raises(BadRequest, match="has no resource"):
        parse_azure_devops(json.dumps(payload).encode(), "main")


def test_ado_delivery_id_falls_back_to_notification_id() -> None:
    payload = event_json("azure_devops_git_push.json")
    payload["id"] = "00000000-0000-0000-0000-000000000000"
    event = parse_azure_devops(json.dumps(payload).encode(), "main")
    assert isinstance(event, PushEvent) and event.delivery_id == "41"


def test_ado_payload_without_event_type_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="eventType: Field required"):
        parse_azure_devops(b'{"resource": {}}', "main")


# --------------------------------------------------------------------------- Azure DevOps authentication


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_ado_basic_credentials_that_match_pass() -> None:
    verify_azure_devops(
        {"Authorization": basic("hook", "pa:ss")}, basic_user="hook", basic_password="pa:ss", shared_secret=None
    )


def test_ado_header_names_are_case_insensitive() -> None:
    verify_azure_devops(
        {"authorization": basic("hook", "pw"), "x-webhook-secret": "tok"},
        basic_user="hook",
        basic_password="pw",
        shared_secret="tok",
    )


@pytest.mark.parametrize(
    "authorization",
    [basic("hook", "wrong"), basic("other", "pw"), basic("hook", "pw").replace("Basic", "Bearer"), "Basic !!!"],
)
def test_ado_wrong_or_malformed_basic_credentials_are_unauthorized(authorization: str) -> None:
    with pytest.raises(Unauthorized) as err:
        verify_azure_devops(
            {"Authorization": authorization}, basic_user="hook", basic_password="pw", shared_secret=None
        )
    assert err.value.status == 401


def test_ado_missing_authorization_header_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="missing Authorization header"):
        verify_azure_devops({}, basic_user="hook", basic_password="pw", shared_secret=None)


def test_ado_shared_secret_header_that_matches_passes() -> None:
    verify_azure_devops({"X-Webhook-Secret": "tok"}, basic_user=None, basic_password=None, shared_secret="tok")


def test_ado_shared_secret_header_name_is_configurable() -> None:
    verify_azure_devops(
        {"X-Ado-Token": "tok"}, basic_user=None, basic_password=None, shared_secret="tok", secret_header="X-Ado-Token"
    )


def test_ado_wrong_shared_secret_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="X-Webhook-Secret header does not match"):
        verify_azure_devops({"X-Webhook-Secret": "nope"}, basic_user=None, basic_password=None, shared_secret="tok")


def test_ado_missing_shared_secret_header_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="missing X-Webhook-Secret header"):
        verify_azure_devops({}, basic_user=None, basic_password=None, shared_secret="tok")


def test_ado_both_configured_means_both_must_match() -> None:
    with pytest.raises(Unauthorized, match="X-Webhook-Secret"):
        verify_azure_devops(
            {"Authorization": basic("hook", "pw")}, basic_user="hook", basic_password="pw", shared_secret="tok"
        )


def test_ado_nothing_configured_refuses_and_names_the_settings() -> None:
    with pytest.raises(Unauthorized) as err:
        verify_azure_devops({"Authorization": basic("a", "b")}, basic_user=None, basic_password="", shared_secret="")
    assert err.value.status == 401
    assert settings.ADO_WEBHOOK_SECRET in err.value.message
    assert settings.ADO_WEBHOOK_USER in err.value.message and settings.ADO_WEBHOOK_PASSWORD in err.value.message


def test_ado_half_configured_basic_refuses() -> None:
    with pytest.raises(Unauthorized, match="half configured"):
        verify_azure_devops({}, basic_user="hook", basic_password=None, shared_secret="tok")
