"""Spec sources against a real local git repository and a local HTTP server imitating GitHub and Azure DevOps."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shared import settings
from shared.errors import (
    BadRequest,
    ConfigurationError,
    NotFound,
    PipelineError,
    Unauthorized,
    Unavailable,
    UpstreamError,
)
from shared.git_source import (
    AzureDevOpsSource,
    GitHubSource,
    LocalGitSource,
    source_from_settings,
    spec_paths,
)
from shared.webhooks import PushEvent

CHURN_V1 = b"name: churn\nmodel: logistic_regression\nparams: {C: 1.0}\n"
CHURN_V2 = b"name: churn\nmodel: random_forest\nparams: {max_depth: 8}\n"
FRAUD = b'{"name": "fraud", "model": "gradient_boosting"}\n'
TOKEN = "ghp_S3cretT0kenNeverLogged"
PAT = "adoPatS3cretNeverLogged"


# --------------------------------------------------------------------------- a real local repository


@dataclass(frozen=True)
class Repo:
    path: Path
    v1: str
    v2: str


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Dana Data",
        "GIT_AUTHOR_EMAIL": "dana@contoso.example",
        "GIT_COMMITTER_NAME": "Dana Data",
        "GIT_COMMITTER_EMAIL": "dana@contoso.example",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, env=env)
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    path = tmp_path_factory.mktemp("specs-repo")
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "specs").mkdir()
    (path / "specs" / "churn.yaml").write_bytes(CHURN_V1)
    (path / "README.md").write_text("# specs\n")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "churn v1")
    v1 = git(path, "rev-parse", "HEAD")
    (path / "specs" / "churn.yaml").write_bytes(CHURN_V2)
    (path / "specs" / "team").mkdir()
    (path / "specs" / "team" / "fraud.json").write_bytes(FRAUD)
    (path / "specs" / "NOTES.md").write_text("not a spec\n")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "churn v2, fraud")
    return Repo(path=path, v1=v1, v2=git(path, "rev-parse", "HEAD"))


def test_local_source_reads_a_spec_at_each_commit(repo: Repo) -> None:
    source = LocalGitSource(str(repo.path))
    assert source.read_file("specs/churn.yaml", repo.v1) == CHURN_V1
    assert source.read_file("specs/churn.yaml", repo.v2) == CHURN_V2


def test_local_source_lists_a_folder_recursively_at_a_commit(repo: Repo) -> None:
    source = LocalGitSource(str(repo.path))
    assert source.list_files("specs", repo.v1) == ["specs/churn.yaml"]
    assert source.list_files("specs/", repo.v2) == ["specs/NOTES.md", "specs/churn.yaml", "specs/team/fraud.json"]


def test_local_source_file_missing_at_a_commit_is_not_found(repo: Repo) -> None:
    with pytest.raises(NotFound) as err:
        LocalGitSource(str(repo.path)).read_file("specs/team/fraud.json", repo.v1)
    assert err.value.status == 404
    assert err.value.message == (f"spec (path=specs/team/fraud.json, commit={repo.v1}) not found in "
                                 "the local repository (MLOPS_GIT_LOCAL_PATH)")
    assert str(repo.path) not in err.value.message  # the server's filesystem layout stays private


def test_local_source_unknown_commit_is_not_found_naming_the_commit(repo: Repo) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    source = LocalGitSource(str(repo.path))
    with pytest.raises(NotFound, match=f"commit \\(commit={missing}\\) not found"):
        source.read_file("specs/churn.yaml", missing)
    with pytest.raises(NotFound, match=f"commit \\(commit={missing}\\) not found"):
        source.list_files("specs", missing)


def test_local_source_missing_folder_is_not_found(repo: Repo) -> None:
    with pytest.raises(NotFound, match=rf"folder \(path=models, commit=.*check {settings.GIT_SPECS_FOLDER}"):
        LocalGitSource(str(repo.path)).list_files("models", repo.v2)


def test_local_source_accepts_a_file_url(repo: Repo) -> None:
    assert LocalGitSource(repo.path.as_uri()).read_file("specs/churn.yaml", repo.v1) == CHURN_V1


def test_local_source_missing_repository_is_a_configuration_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="MLOPS_GIT_LOCAL_PATH does not name a folder") as err:
        LocalGitSource(str(tmp_path / "nope")).read_file("specs/churn.yaml", "abc1234")
    assert err.value.status == 503 and str(tmp_path) not in err.value.message


@pytest.mark.parametrize("commit", ["--output=/tmp/x", "HEAD:README.md", "", "a b"])
def test_revisions_that_could_be_options_or_paths_are_refused(repo: Repo, commit: str) -> None:
    with pytest.raises(BadRequest) as err:
        LocalGitSource(str(repo.path)).read_file("specs/churn.yaml", commit)
    assert err.value.status == 400


@pytest.mark.parametrize("path", ["../etc/passwd", "/specs/churn.yaml", "specs/./churn.yaml", "specs\\churn.yaml"])
def test_paths_escaping_the_repository_are_refused(repo: Repo, path: str) -> None:
    with pytest.raises(BadRequest, match="relative repository path"):
        LocalGitSource(str(repo.path)).read_file(path, repo.v2)


def push_event(commit: str, changed: frozenset[str] | None) -> PushEvent:
    return PushEvent(
        provider="github",
        repository="contoso/ml-specs",
        ref="refs/heads/main",
        branch="main",
        commit=commit,
        delivery_id="d-1",
        pusher="dana-ds",
        changed_paths=changed,
        removed_paths=None if changed is None else frozenset(),
    )


def test_spec_paths_lists_every_spec_when_the_push_did_not_say_what_changed(repo: Repo) -> None:
    paths = spec_paths(LocalGitSource(str(repo.path)), push_event(repo.v2, None), "specs")
    assert paths == ["specs/churn.yaml", "specs/team/fraud.json"]


def test_spec_paths_uses_the_pushed_file_list_when_known(repo: Repo) -> None:
    event = push_event(repo.v2, frozenset({"specs/churn.yaml", "README.md"}))
    assert spec_paths(LocalGitSource(str(repo.path)), event, "specs") == ["specs/churn.yaml"]


def test_factory_builds_each_kind(repo: Repo) -> None:
    assert isinstance(source_from_settings("local", repo_path_or_file_url=str(repo.path)), LocalGitSource)
    assert isinstance(source_from_settings("github", repository="contoso/ml-specs", token=None), GitHubSource)
    ado = source_from_settings(
        "azure_devops", organization_url="https://dev.azure.com/contoso", project="MLOps", repository="ml-specs"
    )
    assert isinstance(ado, AzureDevOpsSource)
    assert isinstance(
        source_from_settings("ADO", organization_url="https://x", project="p", repository="r"), AzureDevOpsSource
    )


def test_factory_refuses_an_unknown_kind_naming_the_choices() -> None:
    with pytest.raises(ConfigurationError) as err:
        source_from_settings("gitlab")
    assert err.value.status == 503
    assert err.value.message == (
        f"unknown git source (kind=gitlab): set {settings.GIT_SOURCE} to one of local, github, azure-devops"
    )


def test_factory_refuses_settings_that_do_not_fit() -> None:
    with pytest.raises(ConfigurationError, match="settings do not fit"):
        source_from_settings("github", repo="contoso/ml-specs")


def test_sources_never_show_their_token_in_repr() -> None:
    github = GitHubSource("contoso/ml-specs", TOKEN)
    ado = AzureDevOpsSource("https://dev.azure.com/contoso", "MLOps", "ml-specs", PAT)
    assert TOKEN not in repr(github) and "token=set" in repr(github)
    assert PAT not in repr(ado) and base64.b64encode(f":{PAT}".encode()).decode() not in repr(ado)


# --------------------------------------------------------------------------- a local HTTP imitation of the APIs

# (commit, path) -> bytes: what the fake hosts serve.
FILES: dict[tuple[str, str], bytes] = {
    ("c1", "specs/churn.yaml"): CHURN_V1,
    ("c2", "specs/churn.yaml"): CHURN_V2,
    ("c2", "specs/team/fraud.json"): FRAUD,
}


@dataclass
class FakeApi:
    """A WSGI app: replays scripted responses first, then serves FILES like the real API would."""

    serve: Callable[[Request], Response]
    script: list[Response] = field(default_factory=list)
    seen: list[Request] = field(default_factory=list)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.get_data()  # read now: the request object outlives the connection
        self.seen.append(request)
        response = self.script.pop(0) if self.script else self.serve(request)
        return response(environ, start_response)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def github_app(request: Request) -> Response:
    if request.headers.get("Authorization") not in (None, f"Bearer {TOKEN}"):
        return json_response({"message": "Bad credentials"}, 401)
    prefix = "/repos/contoso/ml-specs/contents/"
    if not request.path.startswith(prefix):
        return json_response({"message": "Not Found"}, 404)
    path, commit = request.path[len(prefix) :], request.args.get("ref", "")
    if (commit, path) in FILES:
        if request.headers.get("Accept", "").startswith("application/vnd.github.raw"):
            return Response(FILES[commit, path], content_type="application/vnd.github.raw")
        content = base64.b64encode(FILES[commit, path]).decode()
        return json_response({"type": "file", "path": path, "encoding": "base64", "content": content})
    children = {p[len(path) + 1 :].split("/")[0] for (c, p) in FILES if c == commit and p.startswith(path + "/")}
    if not children:
        return json_response({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)
    entries = []
    for child in sorted(children):
        full = f"{path}/{child}"
        entries.append({"name": child, "path": full, "type": "file" if (commit, full) in FILES else "dir"})
    return json_response(entries)


def ado_app(request: Request) -> Response:
    if request.headers.get("Authorization") != "Basic " + base64.b64encode(f":{PAT}".encode()).decode():
        return json_response({"message": "TF400813: The user is not authorized to access this resource."}, 401)
    if request.path != "/contoso/MLOps/_apis/git/repositories/ml-specs/items":
        return json_response({"message": "TF401019: repository not found"}, 404)
    commit = request.args.get("versionDescriptor.version", "")
    if "path" in request.args:
        path = request.args["path"].lstrip("/")
        if (commit, path) not in FILES:
            message = f"TF401174: The item '/{path}' could not be found in the repository 'ml-specs'."
            return json_response({"$id": "1", "message": message, "typeKey": "GitItemNotFoundException"}, 404)
        item = {"objectId": "b" * 40, "gitObjectType": "blob", "commitId": commit, "path": "/" + path}
        return json_response(item | {"content": FILES[commit, path].decode()})
    scope = request.args.get("scopePath", "/").lstrip("/")
    blobs = sorted(p for (c, p) in FILES if c == commit and p.startswith(scope + "/"))
    if not blobs:
        return json_response({"message": f"TF401174: The item '/{scope}' could not be found."}, 404)
    value = [{"path": "/" + scope, "isFolder": True, "gitObjectType": "tree"}]
    value += [{"path": "/specs/team", "isFolder": True, "gitObjectType": "tree"}]
    value += [{"path": "/" + p, "gitObjectType": "blob", "commitId": commit} for p in blobs]
    return json_response({"count": len(value), "value": value})


@pytest.fixture
def serve() -> Iterator[Callable[[FakeApi], str]]:
    """Start a fake API on 127.0.0.1 (free port) and return its base URL."""
    servers = []

    def start(app: FakeApi) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Sleeps(list[float]):
    """An injected sleep that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def github(
    url: str,
    sleeps: Sleeps,
    token: str | None = TOKEN,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    max_wait: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> GitHubSource:
    return GitHubSource(
        "contoso/ml-specs",
        token,
        api_url=url,
        timeout=2,
        retries=retries,
        backoff=backoff,
        max_wait=max_wait,
        sleep=sleeps,
        clock=clock,
    )


def ado(url: str, sleeps: Sleeps, pat: str | None = PAT) -> AzureDevOpsSource:
    return AzureDevOpsSource(f"{url}/contoso", "MLOps", "ml-specs", pat, timeout=2, sleep=sleeps)


# --------------------------------------------------------------------------- GitHub


def test_github_reads_raw_file_at_commit_with_bearer_token(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app)
    source = github(serve(api), Sleeps())
    assert source.read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert source.read_file("specs/churn.yaml", "c2") == CHURN_V2
    request = api.seen[0]
    assert request.path == "/repos/contoso/ml-specs/contents/specs/churn.yaml"
    assert request.args["ref"] == "c1"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github.raw+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_github_decodes_the_base64_object_form_when_raw_is_ignored(serve: Callable[[FakeApi], str]) -> None:
    content = base64.b64encode(CHURN_V2).decode()
    api = FakeApi(github_app, script=[json_response({"type": "file", "encoding": "base64", "content": content})])
    assert github(serve(api), Sleeps()).read_file("specs/churn.yaml", "c2") == CHURN_V2


def test_github_without_token_sends_no_authorization(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app)
    github(serve(api), Sleeps(), token=None).read_file("specs/churn.yaml", "c1")
    assert "Authorization" not in api.seen[0].headers


def test_github_lists_a_folder_recursively(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app)
    source = github(serve(api), Sleeps())
    assert source.list_files("specs", "c2") == ["specs/churn.yaml", "specs/team/fraud.json"]
    assert all(r.headers["Accept"] == "application/vnd.github+json" for r in api.seen)


def test_github_missing_file_is_not_found(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(NotFound) as err:
        github(serve(FakeApi(github_app)), Sleeps()).read_file("specs/x.yaml", "abc123")
    assert err.value.status == 404
    assert err.value.message == "spec (path=specs/x.yaml, commit=abc123) not found in contoso/ml-specs"


def test_github_missing_file_without_token_hints_at_private_repositories(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(NotFound, match=f"if the repository is private, set {settings.GITHUB_TOKEN}"):
        github(serve(FakeApi(github_app)), Sleeps(), token=None).read_file("specs/x.yaml", "abc123")


def test_github_missing_folder_is_not_found(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(NotFound, match="folder \\(path=models, commit=c2\\) not found"):
        github(serve(FakeApi(github_app)), Sleeps()).list_files("models", "c2")


def test_github_bad_token_is_unauthorized_without_echoing_it(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(Unauthorized) as err:
        github(serve(FakeApi(github_app)), Sleeps(), token="ghp_wrong").read_file("specs/churn.yaml", "c1")
    assert err.value.status == 401
    assert err.value.message == f"GitHub rejected the token: check setting {settings.GITHUB_TOKEN}"
    assert "ghp_wrong" not in str(err.value)


def test_github_forbidden_without_rate_limit_is_unauthorized(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app, script=[json_response({"message": "Resource not accessible by integration"}, 403)])
    sleeps = Sleeps()
    with pytest.raises(Unauthorized, match="grants contents:read"):
        github(serve(api), sleeps).read_file("specs/churn.yaml", "c1")
    assert sleeps == []


def test_github_server_error_is_retried_with_backoff(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app, script=[json_response({"message": "Server Error"}, 500)])
    sleeps = Sleeps()
    assert github(serve(api), sleeps, backoff=0.25).read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert sleeps == [0.25]
    assert len(api.seen) == 2


def test_github_429_honours_retry_after(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app, script=[json_response({"message": "slow down"}, 429, {"Retry-After": "7"})])
    sleeps = Sleeps()
    assert github(serve(api), sleeps).read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert sleeps == [7.0]


def test_github_retry_after_may_be_an_http_date(serve: Callable[[FakeApi], str]) -> None:
    limited = json_response({}, 503, {"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"})
    sleeps = Sleeps()
    source = github(serve(FakeApi(github_app, script=[limited])), sleeps, clock=lambda: 1445412487.0)
    assert source.read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert sleeps == [3.0]


def test_github_primary_rate_limit_waits_until_reset(serve: Callable[[FakeApi], str]) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000012"}
    api = FakeApi(github_app, script=[json_response({"message": "API rate limit exceeded"}, 403, headers)])
    sleeps = Sleeps()
    assert github(serve(api), sleeps, clock=lambda: 1000000.0).read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert sleeps == [12.0]


def test_github_rate_limit_longer_than_max_wait_gives_up_at_once(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(github_app, script=[json_response({}, 429, {"Retry-After": "3600"})])
    sleeps = Sleeps()
    with pytest.raises(Unavailable) as err:
        github(serve(api), sleeps, max_wait=60).read_file("specs/churn.yaml", "c1")
    assert err.value.status == 503
    assert "asked to wait 3600s (last=HTTP 429)" in err.value.message
    assert sleeps == []


def test_github_exhausted_retries_are_unavailable_with_the_last_status(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(lambda _: json_response({"message": "unicorn"}, 503))
    sleeps = Sleeps()
    with pytest.raises(Unavailable) as err:
        github(serve(api), sleeps, retries=3, backoff=0.5).read_file("specs/churn.yaml", "c1")
    assert err.value.status == 503
    assert "after 4 attempts (last=HTTP 503)" in err.value.message
    details = err.value.details
    assert isinstance(details, dict) and (details["attempts"], details["last"]) == (4, "HTTP 503")
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(api.seen) == 4


@pytest.mark.parametrize(("answer", "words"), [
    (lambda: json_response({"message": "I'm a teapot"}, 418), "GitHub answered HTTP 418 for spec"),
    (lambda: Response("<html>maintenance</html>", content_type="text/html"),
     "expected JSON, got content-type=text/html"),
])
def test_an_unusable_github_answer_is_a_502_naming_what_came_back(serve: Callable[[FakeApi], str],
                                                                  answer: Callable[[], Response], words: str) -> None:
    api = FakeApi(lambda _: answer())
    with pytest.raises(UpstreamError) as err:
        github(serve(api), Sleeps()).list_files("specs", "c1")
    assert (err.value.status, err.value.code) == (502, "UPSTREAM_ERROR")
    assert words.split(" for ")[0] in err.value.message


def test_a_failed_git_listing_is_a_502_whose_answer_keeps_gits_words_and_paths_for_the_log(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "churn.yaml").write_bytes(CHURN_V1)
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "one")
    commit, tree = git(tmp_path, "rev-parse", "HEAD"), git(tmp_path, "rev-parse", "HEAD^{tree}")
    (tmp_path / ".git" / "objects" / tree[:2] / tree[2:]).unlink()  # the commit stays, its tree is gone
    with pytest.raises(UpstreamError) as err:
        LocalGitSource(str(tmp_path)).list_files("specs", commit)
    assert err.value.status == 502 and str(tmp_path) not in err.value.message
    assert "see the function log" in err.value.message and "ls-tree" in (err.value.internal or "")


def test_unreachable_host_is_unavailable_after_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(Unavailable, match="after 3 attempts \\(last=ConnectionError\\)"):
        github(f"http://127.0.0.1:{port}", sleeps, retries=2, backoff=0.1).read_file("specs/churn.yaml", "c1")
    assert sleeps == [0.1, 0.2]


def test_read_timeout_is_retried(serve: Callable[[FakeApi], str]) -> None:
    release = threading.Event()
    calls = []

    def slow_then_fast(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            release.wait(2)
        return github_app(request)

    source = GitHubSource(
        "contoso/ml-specs", TOKEN, api_url=serve(FakeApi(slow_then_fast)), timeout=0.2, sleep=Sleeps()
    )
    try:
        assert source.read_file("specs/churn.yaml", "c1") == CHURN_V1
    finally:
        release.set()
    assert len(calls) == 2


def test_github_repository_must_be_owner_slash_name() -> None:
    with pytest.raises(PipelineError, match="must look like owner/name"):
        GitHubSource("ml-specs")


# --------------------------------------------------------------------------- Azure DevOps


def test_ado_reads_a_file_at_commit_with_basic_pat(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(ado_app)
    assert ado(serve(api), Sleeps()).read_file("specs/churn.yaml", "c2") == CHURN_V2
    request = api.seen[0]
    assert request.path == "/contoso/MLOps/_apis/git/repositories/ml-specs/items"
    assert base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")) == f":{PAT}".encode()
    assert dict(request.args) == {
        "path": "/specs/churn.yaml",
        "includeContent": "true",
        "versionDescriptor.version": "c2",
        "versionDescriptor.versionType": "commit",
        "$format": "json",
        "api-version": "7.1",
    }


def test_ado_lists_a_folder_recursively_without_folders(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(ado_app)
    assert ado(serve(api), Sleeps()).list_files("specs", "c2") == ["specs/churn.yaml", "specs/team/fraud.json"]
    assert api.seen[0].args["recursionLevel"] == "Full"
    assert api.seen[0].args["scopePath"] == "/specs"


def test_ado_missing_file_is_not_found(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(NotFound) as err:
        ado(serve(FakeApi(ado_app)), Sleeps()).read_file("specs/x.yaml", "c1")
    assert err.value.status == 404
    assert err.value.message == "spec (path=specs/x.yaml, commit=c1) not found in MLOps/ml-specs"


def test_ado_bad_pat_is_unauthorized(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(Unauthorized) as err:
        ado(serve(FakeApi(ado_app)), Sleeps(), pat="wrong").read_file("specs/churn.yaml", "c1")
    assert err.value.status == 401
    assert f"check setting {settings.ADO_PAT}" in err.value.message


def test_ado_sign_in_page_with_203_is_unauthorized(serve: Callable[[FakeApi], str]) -> None:
    sign_in = Response("<html><title>Azure DevOps Services | Sign In</title></html>", 203, content_type="text/html")
    with pytest.raises(Unauthorized, match="HTTP 203"):
        ado(serve(FakeApi(ado_app, script=[sign_in])), Sleeps()).read_file("specs/churn.yaml", "c1")


def test_ado_redirect_to_sign_in_is_unauthorized_and_not_followed(serve: Callable[[FakeApi], str]) -> None:
    redirect = Response("", 302, headers={"Location": "https://login.microsoftonline.com/"})
    api = FakeApi(ado_app, script=[redirect])
    with pytest.raises(Unauthorized, match="HTTP 302"):
        ado(serve(api), Sleeps()).read_file("specs/churn.yaml", "c1")
    assert len(api.seen) == 1


def test_ado_server_error_then_success_is_retried(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(ado_app, script=[json_response({"message": "TF400898: An Internal Error Occurred."}, 500)])
    sleeps = Sleeps()
    assert ado(serve(api), sleeps).read_file("specs/churn.yaml", "c1") == CHURN_V1
    assert sleeps == [0.5]


def test_ado_throttling_honours_retry_after(serve: Callable[[FakeApi], str]) -> None:
    api = FakeApi(ado_app, script=[json_response({"message": "throttled"}, 429, {"Retry-After": "4"})])
    sleeps = Sleeps()
    assert ado(serve(api), sleeps).list_files("specs", "c1") == ["specs/churn.yaml"]
    assert sleeps == [4.0]


def test_ado_missing_folder_is_not_found(serve: Callable[[FakeApi], str]) -> None:
    with pytest.raises(NotFound, match="folder \\(path=models, commit=c1\\) not found in MLOps/ml-specs"):
        ado(serve(FakeApi(ado_app)), Sleeps()).list_files("models", "c1")
