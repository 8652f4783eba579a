"""Read training specs from git at an exact commit: local git CLI, GitHub REST, Azure DevOps REST.

Only file bytes are read; nothing from the repository is ever executed. Tokens live in request
headers only and never appear in messages, reprs or exception details.

Messages name the app setting to fix, using the variable names from shared/settings.py.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

import requests

from shared import settings
from shared.errors import BadRequest, ConfigurationError, NotFound, Unauthorized, Unavailable, UpstreamError
from shared.webhooks import PushEvent, is_spec_path, normalise_folder, specs_to_fetch

Sleep = Callable[[float], None]
Clock = Callable[[], float]

# A revision is a sha (or, for local runs, a ref); ':' would split `<rev>:<path>`, a leading '-'
# would turn it into a git option.
_REVISION = re.compile(r"^[A-Za-z0-9_][^\s:\\]{0,254}$")
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class SpecSource(Protocol):
    """Where specs are read from; every path is repository-relative, without a leading '/'."""

    def read_file(self, path: str, commit: str) -> bytes:
        """Bytes of `path` at `commit`.

        Raises NotFound (file or commit absent), Unauthorized, Unavailable (host did not answer).
        """
        ...

    def list_files(self, folder: str, commit: str) -> list[str]:
        """Every file under `folder` at `commit`, recursively, sorted.

        Raises NotFound when the folder or commit does not exist: a missing folder is far more
        often a wrong specs folder setting or repository than a deliberate deletion of every spec.
        """
        ...


def spec_paths(source: SpecSource, event: PushEvent, specs_folder: str) -> list[str]:
    """The spec files a push asks to (re)validate: those it touched, or all of them when unknown."""
    touched = specs_to_fetch(event, specs_folder)
    if touched is not None:
        return touched
    folder = normalise_folder(specs_folder)
    return [p for p in source.list_files(folder, event.commit) if is_spec_path(p, folder)]


def source_from_settings(kind: str, **params: Any) -> SpecSource:
    """Build the configured source: kind is 'local', 'github' or 'azure-devops'."""
    factories: dict[str, Callable[..., SpecSource]] = {
        "local": LocalGitSource,
        "github": GitHubSource,
        "azure-devops": AzureDevOpsSource,
        "ado": AzureDevOpsSource,
    }
    factory = factories.get(kind.strip().lower().replace("_", "-"))
    if factory is None:
        raise ConfigurationError(
            f"unknown git source (kind={kind}): set {settings.GIT_SOURCE} to one of local, github, azure-devops"
        )
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigurationError(f"git source (kind={kind}) settings do not fit: {exc}") from exc


def _check_revision(commit: str) -> None:
    if not _REVISION.match(commit):
        raise BadRequest(f"commit (commit={commit!r}) is not a valid git revision")


def _check_path(path: str) -> None:
    """Refuse absolute, dot-segment or backslash paths before they reach a URL or the git CLI."""
    parts = path.split("/")
    if not path or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise BadRequest(f"path (path={path!r}) must be a relative repository path without '.' or '..'")


# --------------------------------------------------------------------------- local git CLI


class LocalGitSource:
    """Reads a local clone (working or bare) with the git CLI; for local runs and tests."""

    def __init__(self, repo_path_or_file_url: str, *, timeout: float = 30.0) -> None:
        self._repo = _local_path(repo_path_or_file_url)
        self._timeout = timeout
        # Messages name the setting, never the server's filesystem path (they reach HTTP answers).
        self._label = f"the local repository ({settings.GIT_LOCAL_PATH})"

    def __repr__(self) -> str:
        return f"LocalGitSource({self._repo!r})"

    def read_file(self, path: str, commit: str) -> bytes:
        _check_path(path)
        _check_revision(commit)
        # cat-file, not show: `git show` may run a textconv driver from the local git config.
        result = self._git("cat-file", "blob", f"{commit}:{path}")
        if result.returncode == 0:
            return result.stdout
        self._require_commit(commit)
        raise NotFound(f"spec (path={path}, commit={commit}) not found in {self._label}")

    def list_files(self, folder: str, commit: str) -> list[str]:
        folder = normalise_folder(folder)
        _check_revision(commit)
        result = self._git("ls-tree", "-r", "-z", "--full-tree", "--name-only", commit, "--", folder)
        if result.returncode != 0:
            self._require_commit(commit)
            # git's own words can name local paths: they go to the log only
            raise UpstreamError(f"git could not list the specs folder in {self._label}; see the function log",
                                internal=f"git ls-tree failed in {self._label}: {_stderr(result)}")
        names = [n for n in result.stdout.decode("utf-8", "surrogateescape").split("\x00") if n]
        files = sorted(n for n in names if n.startswith(folder + "/"))
        if not files:
            raise NotFound(
                f"folder (path={folder}, commit={commit}) not found in {self._label}: check {settings.GIT_SPECS_FOLDER}"
            )
        return files

    def _require_commit(self, commit: str) -> None:
        """Raise NotFound naming the commit when it is what is missing."""
        probe = self._git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        if probe.returncode != 0:
            raise NotFound(f"commit (commit={commit}) not found in {self._label}")

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        if not os.path.isdir(self._repo):
            raise ConfigurationError(f"{settings.GIT_LOCAL_PATH} does not name a folder on this host: the local git "
                                     "repository specs are read from on a push")
        try:
            return subprocess.run(
                ["git", "-C", self._repo, *args],
                capture_output=True,
                timeout=self._timeout,
                check=False,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
            )
        except FileNotFoundError as exc:
            raise ConfigurationError("git CLI not found on PATH: install git to use the local git source") from exc
        except subprocess.TimeoutExpired as exc:
            raise Unavailable(f"git {args[0]} timed out after {self._timeout}s in {self._label}") from exc


def _local_path(repo: str) -> str:
    """Accept a filesystem path or a file:// URL; anything remote is refused."""
    parsed = urlparse(repo)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # 'C:' on Windows is a drive, not a scheme
        raise ConfigurationError(f"{settings.GIT_LOCAL_PATH} is invalid: the local git repository needs a path or "
                                 f"file:// URL, got scheme={parsed.scheme}")
    return repo


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------- HTTP plumbing


class _Http:
    """GET with timeouts and exponential back-off on 429/5xx/connection errors, honouring Retry-After.

    `retries` counts retries after the first attempt. A wait longer than `max_wait` is not slept
    through (a Function should not block for an hourly rate-limit reset): Unavailable is raised.
    """

    def __init__(
        self,
        host_label: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_wait: float,
        sleep: Sleep,
        clock: Clock,
        follow_redirects: bool,
        session: requests.Session | None,
    ) -> None:
        self.host_label = host_label
        self._timeout = timeout
        self._retries = max(0, retries)
        self._backoff = backoff
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._follow = follow_redirects
        self._session = session or requests.Session()

    def get(self, url: str, *, params: Mapping[str, str], headers: Mapping[str, str]) -> requests.Response:
        last = "no attempt"
        for attempt in range(self._retries + 1):
            try:
                response = self._session.get(
                    url, params=params, headers=headers, timeout=self._timeout, allow_redirects=self._follow
                )
            except requests.RequestException as exc:
                last, wait = type(exc).__name__, self._backoff * 2**attempt
            else:
                retry_after = self._retry_wait(response, attempt)
                if retry_after is None:
                    return response
                last, wait = f"HTTP {response.status_code}", retry_after
            if attempt == self._retries:
                break
            if wait > self._max_wait:
                raise Unavailable(
                    f"{self.host_label} asked to wait {wait:.0f}s (last={last}), "
                    f"longer than {self._max_wait:.0f}s: try again later",
                    details={"host": self.host_label, "last": last, "retry_after": wait},
                )
            self._sleep(wait)
        attempts = self._retries + 1
        raise Unavailable(
            f"{self.host_label} did not answer successfully after {attempts} attempts (last={last}): try again later",
            details={"host": self.host_label, "attempts": attempts, "last": last},
        )

    def _retry_wait(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the response is final."""
        status = response.status_code
        rate_limited = status in (403, 429) and (
            "Retry-After" in response.headers or response.headers.get("X-RateLimit-Remaining") == "0"
        )
        if status not in _RETRYABLE and not rate_limited:
            return None
        hinted = _retry_after(response.headers.get("Retry-After"), self._clock)
        if hinted is None and response.headers.get("X-RateLimit-Remaining") == "0":
            reset = response.headers.get("X-RateLimit-Reset", "")
            hinted = max(0.0, float(reset) - self._clock()) if reset.isdigit() else None
        return hinted if hinted is not None else self._backoff * 2**attempt


def _retry_after(value: str | None, clock: Clock) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


def _json(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError(f"{what}: expected JSON, got content-type={response.headers.get('Content-Type')}") from exc


# --------------------------------------------------------------------------- GitHub


class GitHubSource:
    """GitHub REST contents API: GET /repos/{owner}/{repo}/contents/{path}?ref={commit}.

    Listing recurses with the same endpoint, which returns at most 1000 entries per directory.
    """

    def __init__(
        self,
        repository: str,
        token: str | None = None,
        *,
        api_url: str = "https://api.github.com",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        sleep: Sleep = time.sleep,
        clock: Clock = time.time,
        session: requests.Session | None = None,
    ) -> None:
        owner, _, name = repository.strip().partition("/")
        if not owner or not name or "/" in name:
            raise ConfigurationError(f"GitHub repository (repository={repository!r}) must look like owner/name")
        self.repository = f"{owner}/{name}"
        self._base = f"{api_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(name, safe='')}/contents"
        self._token = token or None
        self._http = _Http(
            f"GitHub ({urlparse(api_url).netloc})",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_wait=max_wait,
            sleep=sleep,
            clock=clock,
            follow_redirects=True,  # requests drops Authorization when a redirect changes host
            session=session,
        )

    def __repr__(self) -> str:
        return f"GitHubSource({self.repository!r}, token={'set' if self._token else 'unset'})"

    def read_file(self, path: str, commit: str) -> bytes:
        _check_path(path)
        _check_revision(commit)
        response = self._get(path, commit, accept="application/vnd.github.raw+json")
        self._raise_for(response, f"spec (path={path}, commit={commit})")
        if not response.headers.get("Content-Type", "").startswith("application/json"):
            return response.content
        # Some proxies and GitHub Enterprise versions ignore the raw media type: decode the object form.
        body = _json(response, f"GitHub contents of {path}")
        if isinstance(body, dict) and body.get("encoding") == "base64" and isinstance(body.get("content"), str):
            return base64.b64decode(body["content"])
        raise NotFound(f"spec (path={path}, commit={commit}) in {self.repository} is not a readable file")

    def list_files(self, folder: str, commit: str) -> list[str]:
        folder = normalise_folder(folder)
        _check_revision(commit)
        files: list[str] = []
        pending = [folder]
        while pending:
            current = pending.pop()
            response = self._get(current, commit, accept="application/vnd.github+json")
            self._raise_for(response, f"folder (path={current}, commit={commit})")
            entries = _json(response, f"GitHub listing of {current}")
            if not isinstance(entries, list):
                raise NotFound(f"folder (path={current}, commit={commit}) in {self.repository} is a file, not a folder")
            for entry in entries:
                kind, entry_path = entry.get("type"), entry.get("path")
                if not isinstance(entry_path, str):
                    continue
                if kind == "dir":
                    pending.append(entry_path)
                elif kind in ("file", "symlink"):
                    files.append(entry_path)
        return sorted(files)

    def _get(self, path: str, commit: str, *, accept: str) -> requests.Response:
        headers = {"Accept": accept, "X-GitHub-Api-Version": "2022-11-28"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return self._http.get(f"{self._base}/{quote(path, safe='/')}", params={"ref": commit}, headers=headers)

    def _raise_for(self, response: requests.Response, thing: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            hint = "" if self._token else f"; if the repository is private, set {settings.GITHUB_TOKEN}"
            raise NotFound(f"{thing} not found in {self.repository}{hint}")
        if status == 401:
            raise Unauthorized(f"GitHub rejected the token: check setting {settings.GITHUB_TOKEN}")
        if status == 403:
            raise Unauthorized(
                f"GitHub refused access to {self.repository}: "
                f"check setting {settings.GITHUB_TOKEN} grants contents:read"
            )
        raise UpstreamError(f"GitHub answered HTTP {status} for {thing} in {self.repository}")


# --------------------------------------------------------------------------- Azure DevOps


class AzureDevOpsSource:
    """Azure DevOps Git Items API: GET {org}/{project}/_apis/git/repositories/{repo}/items."""

    API_VERSION = "7.1"

    def __init__(
        self,
        organization_url: str,
        project: str,
        repository: str,
        pat: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        sleep: Sleep = time.sleep,
        clock: Clock = time.time,
        session: requests.Session | None = None,
    ) -> None:
        org = organization_url.rstrip("/")
        if not urlparse(org).scheme or not project or not repository:
            raise ConfigurationError(
                "Azure DevOps source needs organization_url (https://dev.azure.com/<org>), project and repository"
            )
        self.repository = f"{project}/{repository}"
        self._url = f"{org}/{quote(project, safe='')}/_apis/git/repositories/{quote(repository, safe='')}/items"
        self._auth = "Basic " + base64.b64encode(f":{pat}".encode()).decode("ascii") if pat else None
        self._http = _Http(
            f"Azure DevOps ({urlparse(org).netloc})",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_wait=max_wait,
            sleep=sleep,
            clock=clock,
            # A redirect here is the sign-in page for a rejected PAT, never the file.
            follow_redirects=False,
            session=session,
        )

    def __repr__(self) -> str:
        return f"AzureDevOpsSource({self.repository!r}, pat={'set' if self._auth else 'unset'})"

    def read_file(self, path: str, commit: str) -> bytes:
        _check_path(path)
        _check_revision(commit)
        thing = f"spec (path={path}, commit={commit})"
        body = self._get({"path": "/" + path, "includeContent": "true"}, commit, thing)
        if not isinstance(body, dict) or body.get("isFolder") or not isinstance(body.get("content"), str):
            raise NotFound(f"{thing} in {self.repository} is not a readable file")
        content: str = body["content"]
        return content.encode("utf-8")

    def list_files(self, folder: str, commit: str) -> list[str]:
        folder = normalise_folder(folder)
        _check_revision(commit)
        thing = f"folder (path={folder}, commit={commit})"
        body = self._get({"scopePath": "/" + folder, "recursionLevel": "Full"}, commit, thing)
        items = body.get("value") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise UpstreamError(f"Azure DevOps listing of {thing}: expected a 'value' list")
        files = sorted(
            item["path"].lstrip("/")
            for item in items
            if isinstance(item.get("path"), str)
            and not item.get("isFolder")
            and item.get("gitObjectType", "blob") == "blob"
        )
        if not files:
            raise NotFound(f"{thing} not found in {self.repository}: check {settings.GIT_SPECS_FOLDER}")
        return files

    def _get(self, params: dict[str, str], commit: str, thing: str) -> Any:
        query = {
            **params,
            "versionDescriptor.version": commit,
            "versionDescriptor.versionType": "commit",
            "$format": "json",
            "api-version": self.API_VERSION,
        }
        headers = {"Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        response = self._http.get(self._url, params=query, headers=headers)
        self._raise_for(response, thing)
        return _json(response, f"Azure DevOps items for {thing}")

    def _raise_for(self, response: requests.Response, thing: str) -> None:
        status = response.status_code
        # Azure DevOps answers a rejected or missing PAT with 203 or a redirect to an HTML sign-in page.
        signed_out = (
            status == 203
            or 300 <= status < 400
            or (status == 200 and "html" in response.headers.get("Content-Type", ""))
        )
        if status in (401, 403) or signed_out:
            raise Unauthorized(
                f"Azure DevOps rejected the PAT (HTTP {status}): check setting {settings.ADO_PAT} has Code (Read)"
            )
        if status == 404:
            raise NotFound(f"{thing} not found in {self.repository}")
        if status != 200:
            raise UpstreamError(f"Azure DevOps answered HTTP {status} for {thing} in {self.repository}")
