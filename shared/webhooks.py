"""Git webhooks: authenticate a delivery and turn its payload into a read-only PushEvent.

Pure: no network, no storage. The HTTP adapter reads the body (refusing more than
MAX_BODY_BYTES with 413), calls a verify_* function, then a parse_* function, and hands
the PushEvent to the spec fetcher (shared/git_source.py).

Messages name the app setting to fix, using the variable names from shared/settings.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import settings
from shared.errors import BadRequest, PayloadTooLarge, PipelineError, Unauthorized, UnsupportedMediaType

MAX_BODY_BYTES = 1024 * 1024
SPEC_SUFFIXES = (".yaml", ".yml", ".json")

# GitHub caps `commits` at 2048 entries and each commit's file lists at 3000 paths; at the cap
# we cannot tell whether the list was cut, so the changed paths are unknown.
# https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
GITHUB_MAX_COMMITS = 2048
GITHUB_MAX_FILES_PER_COMMIT = 3000

_ZERO_SHA = re.compile(r"^0+$")
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # SHA-1 or SHA-256 git object id
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_NIL_UUID = "00000000-0000-0000-0000-000000000000"

Provider = Literal["github", "azure-devops"]


@dataclass(frozen=True, slots=True)
class PushEvent:
    """A push (or completed pull request) that landed commits on the configured branch."""

    provider: Provider
    repository: str
    ref: str
    branch: str
    commit: str
    delivery_id: str | None
    pusher: str | None
    # None means unknown (truncated or not reported): list every spec at `commit` instead.
    changed_paths: frozenset[str] | None
    removed_paths: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed delivery that asks for no work; reason says why."""

    reason: str
    delivery_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """GitHub's webhook-created ping: answer 200 and do nothing."""

    delivery_id: str | None
    hook_id: int | None
    zen: str | None


# --------------------------------------------------------------------------- authentication


def verify_github_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check X-Hub-Signature-256 against an HMAC-SHA256 of the raw body.

    Raises Unauthorized if the secret is unset or the header is missing, malformed or wrong.
    """
    if not secret:
        raise Unauthorized(f"GitHub webhook secret is not configured: set {settings.GITHUB_WEBHOOK_SECRET}")
    if not header:
        raise Unauthorized(
            f"missing X-Hub-Signature-256 header: set the webhook secret in GitHub to {settings.GITHUB_WEBHOOK_SECRET}"
        )
    match = _SIGNATURE.match(header.strip())
    if match is None:
        raise Unauthorized("malformed X-Hub-Signature-256 header: expected 'sha256=<64 hex digits>'")
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise Unauthorized(
            f"X-Hub-Signature-256 does not match the body: check {settings.GITHUB_WEBHOOK_SECRET} "
            "equals the GitHub webhook secret"
        )


def verify_azure_devops(
    headers: Mapping[str, str],
    *,
    basic_user: str | None,
    basic_password: str | None,
    shared_secret: str | None,
    secret_header: str = "X-Webhook-Secret",
) -> None:
    """Check the service hook's Basic credentials and/or shared-secret header; every configured one must match.

    Raises Unauthorized if nothing is configured, half of Basic is configured, or a check fails.
    """
    if bool(basic_user) != bool(basic_password):
        raise Unauthorized(
            "Azure DevOps basic authentication is half configured: set both "
            f"{settings.ADO_WEBHOOK_USER} and {settings.ADO_WEBHOOK_PASSWORD}"
        )
    if not basic_user and not shared_secret:
        raise Unauthorized(
            f"no Azure DevOps webhook credentials configured: set {settings.ADO_WEBHOOK_USER} and "
            f"{settings.ADO_WEBHOOK_PASSWORD} (basic authentication) "
            f"or {settings.ADO_WEBHOOK_SECRET} (header {secret_header})"
        )
    if basic_user and basic_password:
        _check_basic(_header(headers, "Authorization"), basic_user, basic_password)
    if shared_secret:
        received = _header(headers, secret_header)
        if received is None:
            raise Unauthorized(f"missing {secret_header} header: add it to the service hook's HTTP headers")
        if not hmac.compare_digest(received.encode("utf-8"), shared_secret.encode("utf-8")):
            raise Unauthorized(f"{secret_header} header does not match {settings.ADO_WEBHOOK_SECRET}")


def _check_basic(header: str | None, user: str, password: str) -> None:
    """Compare Basic credentials in constant time without saying which half was wrong."""
    if header is None:
        raise Unauthorized("missing Authorization header: set basic authentication on the Azure DevOps service hook")
    scheme, _, encoded = header.strip().partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if scheme.lower() != "basic" or b":" not in decoded:
        raise Unauthorized("malformed Authorization header: expected 'Basic <base64 user:password>'")
    got_user, _, got_password = decoded.partition(b":")
    user_ok = hmac.compare_digest(got_user, user.encode("utf-8"))
    password_ok = hmac.compare_digest(got_password, password.encode("utf-8"))
    if not (user_ok and password_ok):
        raise Unauthorized(
            f"Azure DevOps basic credentials do not match {settings.ADO_WEBHOOK_USER}/{settings.ADO_WEBHOOK_PASSWORD}"
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up case-insensitively, as HTTP requires, even in a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


# --------------------------------------------------------------------------- wire shapes


class _Wire(BaseModel):
    """Base of the inbound wire shapes: unknown fields ignored, nothing mutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _GitHubCommit(_Wire):
    id: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()


class _GitHubRepository(_Wire):
    full_name: str


class _GitHubPusher(_Wire):
    name: str | None = None


class _GitHubPush(_Wire):
    ref: str
    after: str
    deleted: bool = False
    forced: bool = False
    commits: tuple[_GitHubCommit, ...] | None = None
    head_commit: _GitHubCommit | None = None
    repository: _GitHubRepository
    pusher: _GitHubPusher | None = None


class _GitHubPing(_Wire):
    zen: str | None = None
    hook_id: int | None = None


class _AdoIdentity(_Wire):
    display_name: str | None = Field(None, alias="displayName")
    unique_name: str | None = Field(None, alias="uniqueName")


class _AdoRepository(_Wire):
    id: str | None = None
    name: str | None = None
    url: str | None = None
    remote_url: str | None = Field(None, alias="remoteUrl")


class _AdoRefUpdate(_Wire):
    name: str
    new_object_id: str = Field(alias="newObjectId")


class _AdoCommitRef(_Wire):
    commit_id: str = Field(alias="commitId")


class _AdoPush(_Wire):
    push_id: int | None = Field(None, alias="pushId")
    ref_updates: tuple[_AdoRefUpdate, ...] | None = Field(None, alias="refUpdates")
    repository: _AdoRepository | None = None
    pushed_by: _AdoIdentity | None = Field(None, alias="pushedBy")


class _AdoPullRequest(_Wire):
    pull_request_id: int | None = Field(None, alias="pullRequestId")
    status: str | None = None
    merge_status: str | None = Field(None, alias="mergeStatus")
    target_ref_name: str | None = Field(None, alias="targetRefName")
    last_merge_commit: _AdoCommitRef | None = Field(None, alias="lastMergeCommit")
    repository: _AdoRepository | None = None
    closed_by: _AdoIdentity | None = Field(None, alias="closedBy")
    created_by: _AdoIdentity | None = Field(None, alias="createdBy")


class _AdoEnvelope(_Wire):
    id: str | None = None
    notification_id: int | None = Field(None, alias="notificationId")
    event_type: str = Field(alias="eventType")
    resource: dict[str, Any] | None = None


_W = TypeVar("_W", bound=_Wire)


def _decode(body: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object body; raise BadRequest/PayloadTooLarge/UnsupportedMediaType otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"{what} payload (bytes={len(body)}) exceeds the limit of {MAX_BODY_BYTES} bytes")
    if body.startswith(b"payload="):
        # GitHub sends form encoding when the hook's content type is left at its old default.
        raise UnsupportedMediaType(f"{what} payload is form-encoded: set the webhook content type to application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} payload is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"{what} payload must be a JSON object, got {type(data).__name__}")
    return data


def _validate(model: type[_W], data: object, what: str) -> _W:
    """Build a wire model, turning pydantic's error into BadRequest naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise BadRequest(f"{what} payload is malformed: {where}: {first['msg']}", details=errors) from exc


# --------------------------------------------------------------------------- GitHub


def parse_github(
    event: str | None,
    delivery_id: str | None,
    body: bytes,
    branch: str,
    *,
    repository: str | None = None,
) -> PushEvent | Ignored | Ping:
    """Interpret a GitHub delivery (X-GitHub-Event, X-GitHub-Delivery, raw body) for `branch`.

    `repository` ("owner/name"), when given, ignores pushes from other repositories (org-wide hooks).
    Raises BadRequest for a missing event header or a malformed payload.
    """
    if not event:
        raise BadRequest("missing X-GitHub-Event header: is this delivery from GitHub?")
    if event not in ("push", "ping"):
        return Ignored(f"event '{event}' is not handled: subscribe the webhook to push events only", delivery_id)
    data = _decode(body, f"GitHub {event}")
    if event == "ping":
        ping = _validate(_GitHubPing, data, "GitHub ping")
        return Ping(delivery_id=delivery_id, hook_id=ping.hook_id, zen=ping.zen)
    push = _validate(_GitHubPush, data, "GitHub push")
    if repository and push.repository.full_name.lower() != repository.lower():
        return Ignored(
            f"push to repository {push.repository.full_name}, configured repository is {repository}", delivery_id
        )
    branch = _branch_name(branch)
    reason = _ref_ignore_reason(push.ref, push.deleted or bool(_ZERO_SHA.match(push.after)), branch)
    if reason:
        return Ignored(reason, delivery_id)
    changed, removed = _github_paths(push)
    return PushEvent(
        provider="github",
        repository=push.repository.full_name,
        ref=push.ref,
        branch=branch,
        commit=_object_id(push.after, "GitHub push 'after'"),
        delivery_id=delivery_id,
        pusher=push.pusher.name if push.pusher else None,
        changed_paths=changed,
        removed_paths=removed,
    )


def _github_paths(push: _GitHubPush) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """Net files changed and removed by the push, or (None, None) when the list may be incomplete."""
    commits = list(push.commits or ())
    if not commits or len(commits) >= GITHUB_MAX_COMMITS:
        return None, None  # absent, empty (new branch at an old commit) or possibly truncated
    if push.forced:
        # A force push can drop commits that touched specs; `commits` only lists the new ones.
        return None, None
    if push.head_commit and all(c.id != push.head_commit.id for c in commits):
        commits.append(push.head_commit)
    if any(len(c.added) + len(c.removed) + len(c.modified) >= GITHUB_MAX_FILES_PER_COMMIT for c in commits):
        return None, None
    return _net_changes((c.added + c.modified, c.removed) for c in commits)


def _net_changes(
    commits: Iterable[tuple[Iterable[str], Iterable[str]]],
) -> tuple[frozenset[str], frozenset[str]]:
    """Replay (written, removed) per commit, oldest first, so a file added then deleted counts as removed."""
    changed: set[str] = set()
    removed: set[str] = set()
    for written, gone in commits:
        for path in written:
            changed.add(path)
            removed.discard(path)
        for path in gone:
            removed.add(path)
            changed.discard(path)
    return frozenset(changed), frozenset(removed)


# --------------------------------------------------------------------------- Azure DevOps

_MINIMAL_HINT = (
    "the service hook's 'Resource details to send' is 'Minimal', which keeps only ids and urls "
    "(pushId/pullRequestId, url) and drops the branch and commit; this app does not call the "
    "Azure DevOps API back to fill them in, so set 'Resource details to send' to 'All'"
)


def parse_azure_devops(
    body: bytes,
    branch: str,
    *,
    repository: str | None = None,
) -> PushEvent | Ignored:
    """Interpret an Azure DevOps service hook (git.push or git.pullrequest.merged) for `branch`.

    `repository` (name or id), when given, ignores events from other repositories.
    Raises BadRequest for a malformed payload or one sent with resource details 'Minimal'.
    """
    envelope = _validate(_AdoEnvelope, _decode(body, "Azure DevOps"), "Azure DevOps")
    delivery_id = _ado_delivery_id(envelope)
    if envelope.event_type not in ("git.push", "git.pullrequest.merged"):
        return Ignored(
            f"event '{envelope.event_type}' is not handled: subscribe to 'Code pushed' (git.push)", delivery_id
        )
    if envelope.resource is None:
        raise BadRequest(f"Azure DevOps {envelope.event_type} has no resource: {_MINIMAL_HINT}")
    branch = _branch_name(branch)
    if envelope.event_type == "git.push":
        push = _validate(_AdoPush, envelope.resource, "Azure DevOps git.push")
        return _ado_push(push, branch, delivery_id, repository)
    pr = _validate(_AdoPullRequest, envelope.resource, "Azure DevOps git.pullrequest.merged")
    return _ado_pull_request(pr, branch, delivery_id, repository)


def _ado_push(push: _AdoPush, branch: str, delivery_id: str | None, repository: str | None) -> PushEvent | Ignored:
    """Pick the configured branch's ref update out of a git.push."""
    if push.ref_updates is None:
        raise BadRequest(f"Azure DevOps git.push (pushId={push.push_id}) has no refUpdates: {_MINIMAL_HINT}")
    if _other_ado_repository(push.repository, repository):
        return Ignored(
            f"push to repository {_ado_repo_label(push.repository) or '(none named)'}, configured repository is "
            f"{repository}", delivery_id
        )
    wanted = f"refs/heads/{branch}"
    update = next((u for u in push.ref_updates if u.name == wanted), None)
    if update is None:
        reasons = [_ref_ignore_reason(u.name, bool(_ZERO_SHA.match(u.new_object_id)), branch) for u in push.ref_updates]
        return Ignored(
            "; ".join(r for r in reasons if r) or f"push updated no ref, configured branch is {branch}", delivery_id
        )
    reason = _ref_ignore_reason(update.name, bool(_ZERO_SHA.match(update.new_object_id)), branch)
    if reason:
        return Ignored(reason, delivery_id)
    return PushEvent(
        provider="azure-devops",
        repository=_ado_repo_label(push.repository),
        ref=update.name,
        branch=branch,
        commit=_object_id(update.new_object_id, "Azure DevOps refUpdates newObjectId"),
        delivery_id=delivery_id,
        pusher=_ado_person(push.pushed_by),
        # git.push lists commits without their files, so what changed is unknown.
        changed_paths=None,
        removed_paths=None,
    )


def _ado_pull_request(
    pr: _AdoPullRequest, branch: str, delivery_id: str | None, repository: str | None
) -> PushEvent | Ignored:
    """Accept a completed, successful merge into the configured branch."""
    label = f"pull request {pr.pull_request_id}"
    if pr.status is None and pr.target_ref_name is None:
        raise BadRequest(
            f"Azure DevOps git.pullrequest.merged ({label}) has no status or target branch: {_MINIMAL_HINT}"
        )
    if _other_ado_repository(pr.repository, repository):
        return Ignored(
            f"{label} in repository {_ado_repo_label(pr.repository) or '(none named)'}, configured repository is "
            f"{repository}",
            delivery_id,
        )
    wanted = f"refs/heads/{branch}"
    if pr.target_ref_name != wanted:
        return Ignored(f"{label} targets {pr.target_ref_name}, configured branch is {branch}", delivery_id)
    if pr.status != "completed":
        # The event also fires for the test merge Azure DevOps makes while a PR is open; that
        # merge commit lives on refs/pull/<id>/merge, not on the branch.
        return Ignored(f"{label} merge attempt with status={pr.status} is not a completed merge", delivery_id)
    if pr.merge_status is not None and pr.merge_status != "succeeded":
        return Ignored(f"{label} merge status is {pr.merge_status}, not succeeded", delivery_id)
    if pr.last_merge_commit is None:
        raise BadRequest(f"Azure DevOps {label} is completed but has no lastMergeCommit: {_MINIMAL_HINT}")
    return PushEvent(
        provider="azure-devops",
        repository=_ado_repo_label(pr.repository),
        ref=wanted,
        branch=branch,
        commit=_object_id(pr.last_merge_commit.commit_id, "Azure DevOps lastMergeCommit.commitId"),
        delivery_id=delivery_id,
        pusher=_ado_person(pr.closed_by) or _ado_person(pr.created_by),
        changed_paths=None,
        removed_paths=None,
    )


def _ado_delivery_id(envelope: _AdoEnvelope) -> str | None:
    """Event id (stable across Azure DevOps retries), else the notification id."""
    if envelope.id and envelope.id != _NIL_UUID:
        return envelope.id
    return None if envelope.notification_id is None else str(envelope.notification_id)


def _ado_repo_label(repo: _AdoRepository | None) -> str:
    """The most useful name for lineage: clone URL, else API URL, else name or id."""
    if repo is None:
        return ""
    return repo.remote_url or repo.url or repo.name or repo.id or ""


def _other_ado_repository(repo: _AdoRepository | None, configured: str | None) -> bool:
    """True when a repository is configured and the event's differs (name or id, case-insensitive), or the
    event names none: with a filter set, an event that cannot show where it comes from is not trusted."""
    if not configured:
        return False
    if repo is None or (repo.name is None and repo.id is None):
        return True
    return configured.lower() not in {(repo.name or "").lower(), (repo.id or "").lower()}


def _ado_person(identity: _AdoIdentity | None) -> str | None:
    return None if identity is None else identity.display_name or identity.unique_name


# --------------------------------------------------------------------------- shared rules


def _object_id(value: str, what: str) -> str:
    """The pushed commit, which later names a git revision: only a full hex object id passes."""
    if not _OBJECT_ID.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise BadRequest(f"{what} ({shown!r}) is not a git commit id (40 or 64 hex digits)")
    return value.lower()


def _branch_name(branch: str) -> str:
    """Accept 'main' or 'refs/heads/main' from settings."""
    name = branch.strip().removeprefix("refs/heads/")
    if not name:
        raise PipelineError(f"configured git branch is empty: set {settings.GIT_BRANCH}, e.g. main")
    return name


def _ref_ignore_reason(ref: str, deleted: bool, branch: str) -> str | None:
    """Why a ref update asks for no training, or None if it is a push to the configured branch."""
    if ref.startswith("refs/tags/"):
        return f"tag push {ref} is ignored: only pushes to branch {branch} train"
    if deleted:
        return f"branch deletion {ref} is ignored: a deleted branch has no specs to train"
    if ref != f"refs/heads/{branch}":
        return f"push to {ref}, configured branch is {branch}"
    return None


def normalise_folder(folder: str) -> str:
    """'specs', './specs/' and '/specs' all mean 'specs'; the repository root is refused."""
    cleaned = folder.strip().replace("\\", "/").strip("/")
    cleaned = cleaned.removeprefix("./").strip("/")
    parts = cleaned.split("/")
    if not cleaned or any(part in ("", ".", "..") for part in parts):
        raise PipelineError(
            f"specs folder (folder={folder!r}) must be a relative folder inside the repository: "
            f"set {settings.GIT_SPECS_FOLDER}, e.g. specs"
        )
    return cleaned


def is_spec_path(path: str, specs_folder: str) -> bool:
    """True for a .yaml/.yml/.json file anywhere under the specs folder."""
    folder = normalise_folder(specs_folder)
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in path:
        return False
    return path.startswith(folder + "/") and path.lower().endswith(SPEC_SUFFIXES)


def specs_to_fetch(event: PushEvent, specs_folder: str) -> list[str] | None:
    """Spec files the push wrote (sorted), or None meaning 'list every spec at the commit'.

    Removed specs are never returned: deleting a spec file does not delete a model.
    """
    normalise_folder(specs_folder)  # fail on a bad setting even when nothing changed
    if event.changed_paths is None:
        return None
    removed = event.removed_paths or frozenset()
    return sorted(p for p in event.changed_paths - removed if is_spec_path(p, specs_folder))
