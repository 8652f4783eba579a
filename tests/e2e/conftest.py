"""The real function app running in the local host against the session's Azurite."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devhost.azurite import ROOT, Azurite
from devhost.host import DevHost

SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
MASTER_KEY = json.loads(SAMPLE_SETTINGS.read_text())["DevHost"]["MasterKey"]
GITHUB_SECRET = "e2e-github-secret"
ADO_SECRET = "e2e-ado-secret"


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real local git repository the webhook reads specs from."""
    repo = tmp_path_factory.mktemp("spec-repo")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ds@example.com")
    git(repo, "config", "user.name", "Data Scientist")
    (repo / "README.md").write_text("specs\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


@pytest.fixture(scope="session")
def app_host(azurite: Azurite, spec_repo: Path) -> Iterator[DevHost]:
    """The whole app (function_app.py) served by our local host, auth on."""
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "AzureFunctionsWebHost__hostid": "e2e",
        "MLOPS_SCORING_RECHECK_SECONDS": "0.3",
        "MLOPS_PREDICTION_LOG_FLUSH_SECONDS": "0.3",
        "MLOPS_GIT_SOURCE": "local",
        "MLOPS_GIT_LOCAL_PATH": str(spec_repo),
        "MLOPS_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "MLOPS_ADO_WEBHOOK_SECRET": ADO_SECRET,
        # pushes from other repositories are ignored (tests/events name these)
        "MLOPS_GITHUB_REPOSITORY": "contoso/ml-specs",
        "MLOPS_ADO_REPOSITORY": "ml-specs",
    }
    host = DevHost(ROOT, env=env, port=0, settings_path=SAMPLE_SETTINGS, blob_scan_interval=0.2, grace_seconds=5)
    host.start()
    print(f"\nlocal host started in {host.started_seconds:.2f}s on port {host.port}")
    yield host
    host.stop()


@pytest.fixture
def api(app_host: DevHost):  # type: ignore[no-untyped-def]
    """Call the app over HTTP: api('GET', 'registry/models', key='function'|'master'|None)."""
    session = requests.Session()

    def call(method: str, route: str, *, key: str | None = "function", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key == "function" and app_host.function_key:
            headers["x-functions-key"] = app_host.function_key
        elif key == "master":
            headers["x-functions-key"] = MASTER_KEY
        url = f"http://127.0.0.1:{app_host.port}/api/{route}"
        return session.request(method, url, headers=headers, timeout=60, **kwargs)

    return call
