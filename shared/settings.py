"""Typed app settings, read from the environment once; os.environ is read nowhere else in the app.

Locally (and under `func start`) the Values of local.settings.json are environment variables;
in Azure they are app settings (secrets as Key Vault references, resolved by the platform).
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

# Variable names live here only.
STORAGE = "AzureWebJobsStorage"
STORAGE_ACCOUNT = "AzureWebJobsStorage__accountName"
STORAGE_BLOB_URI = "AzureWebJobsStorage__blobServiceUri"
STORAGE_QUEUE_URI = "AzureWebJobsStorage__queueServiceUri"
STORAGE_CLIENT_ID = "AzureWebJobsStorage__clientId"
PARITY_MAX_ABS_DIFF = "MLOPS_PARITY_MAX_ABS_DIFF"
PARITY_MIN_LABEL_AGREEMENT = "MLOPS_PARITY_MIN_LABEL_AGREEMENT"
SCORING_RECHECK_SECONDS = "MLOPS_SCORING_RECHECK_SECONDS"
SCORING_MAX_BODY_BYTES = "MLOPS_SCORING_MAX_BODY_BYTES"
PREDICTION_LOG_SAMPLE_RATE = "MLOPS_PREDICTION_LOG_SAMPLE_RATE"
PREDICTION_LOG_FLUSH_SECONDS = "MLOPS_PREDICTION_LOG_FLUSH_SECONDS"
PREDICTION_LOG_FLUSH_ROWS = "MLOPS_PREDICTION_LOG_FLUSH_ROWS"
GIT_BRANCH = "MLOPS_GIT_BRANCH"
GIT_SPECS_FOLDER = "MLOPS_GIT_SPECS_FOLDER"
GIT_SOURCE = "MLOPS_GIT_SOURCE"
GIT_LOCAL_PATH = "MLOPS_GIT_LOCAL_PATH"
GITHUB_REPOSITORY = "MLOPS_GITHUB_REPOSITORY"
GITHUB_TOKEN = "MLOPS_GITHUB_TOKEN"
GITHUB_API_URL = "MLOPS_GITHUB_API_URL"
GITHUB_WEBHOOK_SECRET = "MLOPS_GITHUB_WEBHOOK_SECRET"
ADO_ORG_URL = "MLOPS_ADO_ORG_URL"
ADO_PROJECT = "MLOPS_ADO_PROJECT"
ADO_REPOSITORY = "MLOPS_ADO_REPOSITORY"
ADO_PAT = "MLOPS_ADO_PAT"
ADO_WEBHOOK_USER = "MLOPS_ADO_WEBHOOK_USER"
ADO_WEBHOOK_PASSWORD = "MLOPS_ADO_WEBHOOK_PASSWORD"
ADO_WEBHOOK_SECRET = "MLOPS_ADO_WEBHOOK_SECRET"
MONITOR_SCHEDULE = "MLOPS_MONITOR_SCHEDULE"  # the monitor timer's NCRONTAB, read by the host (%...%)
APP_VERSION = "MLOPS_APP_VERSION"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_STORAGE = "UseDevelopmentStorage=true"

VERSION = "0.1.0"

# App Service passes a Key Vault reference through as this literal text until it resolves
# (identity without access, secret missing, vault unreachable): never a usable secret.
KEY_VAULT_REFERENCE = "@microsoft.keyvault("

GIT_SOURCES = ("local", "github", "azure-devops")
_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class Need(StrEnum):
    """What a function needs from its settings; each function checks only its own needs."""

    STORAGE = "storage"
    SCORING = "scoring"
    VALIDATION = "validation"
    GITHUB_WEBHOOK = "github webhook"
    ADO_WEBHOOK = "azure devops webhook"
    GIT_SOURCE = "git source"


# setting -> (need, what it is for): the messages say what a missing or bad value breaks.
_NUMBERS: dict[str, tuple[Need, str, float, float]] = {
    PARITY_MAX_ABS_DIFF: (Need.VALIDATION, "the largest ONNX vs scikit-learn difference export accepts", 0.0, 1.0),
    PARITY_MIN_LABEL_AGREEMENT: (Need.VALIDATION, "the share of labels ONNX and scikit-learn must agree on", 0.0, 1.0),
    SCORING_RECHECK_SECONDS: (Need.SCORING, "how often scoring re-reads the champion alias", 0.0, 3600.0),
    SCORING_MAX_BODY_BYTES: (Need.SCORING, "the largest scoring request body", 1.0, 1024.0**3),
    PREDICTION_LOG_SAMPLE_RATE: (Need.SCORING, "the share of scored requests written to the prediction log", 0.0, 1.0),
    PREDICTION_LOG_FLUSH_SECONDS: (Need.SCORING, "how often the prediction log is flushed", 0.1, 3600.0),
    PREDICTION_LOG_FLUSH_ROWS: (Need.SCORING, "how many logged rows trigger a flush", 1.0, 1e7),
}


def _git_source_kind(raw: str) -> str:
    kind = raw.lower().replace("_", "-")
    return "azure-devops" if kind == "ado" else kind


def is_unresolved_reference(value: str | None) -> bool:
    return value is not None and value.strip().lower().startswith(KEY_VAULT_REFERENCE)


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment."""

    storage_connection_string: str | None
    storage_account_name: str | None
    storage_blob_uri: str | None
    storage_queue_uri: str | None
    storage_client_id: str | None
    parity_max_abs_diff: float = 1e-5
    parity_min_label_agreement: float = 1.0
    scoring_recheck_seconds: float = 5.0
    scoring_max_body_bytes: int = 5 * 1024 * 1024
    prediction_log_sample_rate: float = 1.0
    prediction_log_flush_seconds: float = 5.0
    prediction_log_flush_rows: int = 1000
    git_branch: str = "main"
    git_specs_folder: str = "specs"
    git_source: str = "github"
    git_local_path: str | None = None
    github_repository: str | None = None
    github_token: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    github_webhook_secret: str | None = field(default=None, repr=False)
    ado_org_url: str | None = None
    ado_project: str | None = None
    ado_repository: str | None = None
    ado_pat: str | None = field(default=None, repr=False)
    ado_webhook_user: str | None = None
    ado_webhook_password: str | None = field(default=None, repr=False)
    ado_webhook_secret: str | None = field(default=None, repr=False)
    app_version: str = VERSION
    # (setting, message) for values that could not be read; the default stands in meanwhile
    invalid: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from an environment mapping (os.environ by default); never raises.

        A value that cannot be read keeps its default and is listed in `invalid`, so only the
        functions that need it refuse to work (problems()), not the whole app at import.
        """
        e = os.environ if env is None else env
        invalid: list[tuple[str, str]] = []

        def opt(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        def num(name: str, default: float) -> float:
            raw = opt(name)
            if raw is None:
                return default
            _, what, low, high = _NUMBERS[name]
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not low <= value <= high:
                invalid.append((name, f"{name} is invalid (got {raw[:40]!r}): {what}; use a number from "
                                      f"{low:g} to {high:g}"))
                return default
            return value

        return cls(
            storage_connection_string=opt(STORAGE),
            storage_account_name=opt(STORAGE_ACCOUNT),
            storage_blob_uri=opt(STORAGE_BLOB_URI),
            storage_queue_uri=opt(STORAGE_QUEUE_URI),
            storage_client_id=opt(STORAGE_CLIENT_ID),
            parity_max_abs_diff=num(PARITY_MAX_ABS_DIFF, 1e-5),
            parity_min_label_agreement=num(PARITY_MIN_LABEL_AGREEMENT, 1.0),
            scoring_recheck_seconds=num(SCORING_RECHECK_SECONDS, 5.0),
            scoring_max_body_bytes=int(num(SCORING_MAX_BODY_BYTES, 5 * 1024 * 1024)),
            prediction_log_sample_rate=num(PREDICTION_LOG_SAMPLE_RATE, 1.0),
            prediction_log_flush_seconds=num(PREDICTION_LOG_FLUSH_SECONDS, 5.0),
            prediction_log_flush_rows=int(num(PREDICTION_LOG_FLUSH_ROWS, 1000)),
            git_branch=opt(GIT_BRANCH) or "main",
            git_specs_folder=(opt(GIT_SPECS_FOLDER) or "specs").strip("/"),
            git_source=_git_source_kind(opt(GIT_SOURCE) or "github"),
            git_local_path=opt(GIT_LOCAL_PATH),
            github_repository=opt(GITHUB_REPOSITORY),
            github_token=opt(GITHUB_TOKEN),
            github_api_url=opt(GITHUB_API_URL) or "https://api.github.com",
            github_webhook_secret=opt(GITHUB_WEBHOOK_SECRET),
            ado_org_url=opt(ADO_ORG_URL),
            ado_project=opt(ADO_PROJECT),
            ado_repository=opt(ADO_REPOSITORY),
            ado_pat=opt(ADO_PAT),
            ado_webhook_user=opt(ADO_WEBHOOK_USER),
            ado_webhook_password=opt(ADO_WEBHOOK_PASSWORD),
            ado_webhook_secret=opt(ADO_WEBHOOK_SECRET),
            app_version=opt(APP_VERSION) or VERSION,
            invalid=tuple(invalid),
        )

    def problems(self, need: Need) -> list[str]:
        """Why the settings cannot serve `need`: one message per setting, naming it and what it is for."""
        found = [message for name, message in self.invalid if _NUMBERS[name][0] == need]
        found += _CHECKS.get(need, lambda _: [])(self)
        return found

    def require(self, *needs: Need) -> None:
        """Raise ConfigurationError (503) naming the first missing or invalid setting among `needs`."""
        from shared.errors import ConfigurationError

        for need in needs:
            found = self.problems(need)
            if found:
                raise ConfigurationError(found[0], details={"problems": found} if len(found) > 1 else None)

    def startup_problems(self) -> dict[Need, list[str]]:
        """Every need the settings cannot serve, for the host log at start."""
        return {need: found for need in Need if (found := self.problems(need))}


def _missing(name: str, what: str) -> str:
    return f"{name} is not set: {what}"


def _unresolved(name: str, what: str) -> str:
    return (f"{name} is an unresolved Key Vault reference: {what}; grant the app's identity "
            "'Key Vault Secrets User' on the vault and check the secret exists")


def _secret(name: str, value: str | None, what: str) -> list[str]:
    """A secret must be set and resolved: an empty or literal '@Microsoft.KeyVault(...)' one fails closed."""
    if value is None:
        return [_missing(name, what)]
    return [_unresolved(name, what)] if is_unresolved_reference(value) else []


def _optional_secret(name: str, value: str | None, what: str) -> list[str]:
    return [_unresolved(name, what)] if is_unresolved_reference(value) else []


def _storage_problems(s: Settings) -> list[str]:
    if s.storage_connection_string or s.storage_account_name or (s.storage_blob_uri and s.storage_queue_uri):
        return _optional_secret(STORAGE, s.storage_connection_string, "the storage the app keeps its state in")
    return [_missing(STORAGE, "the storage the app keeps its state in (a connection string, "
                              f"{DEV_STORAGE} for Azurite) or set {STORAGE_ACCOUNT} for identity-based access")]


def _github_webhook_problems(s: Settings) -> list[str]:
    return _secret(GITHUB_WEBHOOK_SECRET, s.github_webhook_secret,
                   "the secret GitHub signs webhook deliveries with (X-Hub-Signature-256)")


def _ado_webhook_problems(s: Settings) -> list[str]:
    what_user = "the user name of the Azure DevOps service hook's basic authentication"
    what_password = "the password of the Azure DevOps service hook's basic authentication"
    what_secret = "the value of the Azure DevOps service hook's X-Webhook-Secret header"
    if not (s.ado_webhook_user or s.ado_webhook_password or s.ado_webhook_secret):
        return [_missing(ADO_WEBHOOK_SECRET, what_secret + f" (or set {ADO_WEBHOOK_USER} and {ADO_WEBHOOK_PASSWORD})")]
    found = _optional_secret(ADO_WEBHOOK_SECRET, s.ado_webhook_secret, what_secret)
    if s.ado_webhook_user or s.ado_webhook_password:
        found += _secret(ADO_WEBHOOK_USER, s.ado_webhook_user, what_user)
        found += _secret(ADO_WEBHOOK_PASSWORD, s.ado_webhook_password, what_password)
    return found


def _git_source_problems(s: Settings) -> list[str]:
    folder = s.git_specs_folder.replace("\\", "/")
    found = [] if all(part not in ("", ".", "..") for part in folder.split("/")) else [
        f"{GIT_SPECS_FOLDER} is invalid (got {s.git_specs_folder!r}): the repository folder specs are read "
        "from; use a relative folder such as specs"]
    if s.git_source == "local":
        return found + ([] if s.git_local_path else [_missing(
            GIT_LOCAL_PATH, "the local git repository (a path or file:// URL) specs are read from on a push")])
    if s.git_source == "github":
        return found + _github_source_problems(s)
    if s.git_source == "azure-devops":
        return found + _ado_source_problems(s)
    return found + [f"{GIT_SOURCE} is invalid (got {s.git_source[:40]!r}): where specs are read from on a push; "
                    f"use one of {', '.join(GIT_SOURCES)}"]


def _github_source_problems(s: Settings) -> list[str]:
    what = "the GitHub repository (owner/name) specs are read from on a push"
    if s.github_repository is None:
        return [_missing(GITHUB_REPOSITORY, what)]
    if not _GITHUB_REPOSITORY.fullmatch(s.github_repository):
        return [f"{GITHUB_REPOSITORY} is invalid (got {s.github_repository[:80]!r}): {what}"]
    return _optional_secret(GITHUB_TOKEN, s.github_token, "the token that reads specs from a private repository")


def _ado_source_problems(s: Settings) -> list[str]:
    found = [_missing(name, what) for name, value, what in (
        (ADO_ORG_URL, s.ado_org_url, "the Azure DevOps organization URL specs are read from"),
        (ADO_PROJECT, s.ado_project, "the Azure DevOps project specs are read from"),
        (ADO_REPOSITORY, s.ado_repository, "the Azure DevOps repository (name or id) specs are read from"),
    ) if value is None]
    if s.ado_org_url and not s.ado_org_url.lower().startswith(("https://", "http://")):
        found.append(f"{ADO_ORG_URL} is invalid (got {s.ado_org_url[:80]!r}): the Azure DevOps organization URL "
                     "specs are read from; use https://dev.azure.com/<organization>")
    return found + _optional_secret(ADO_PAT, s.ado_pat, "the personal access token that reads specs")


_CHECKS: dict[Need, Callable[[Settings], list[str]]] = {
    Need.STORAGE: _storage_problems,
    Need.GITHUB_WEBHOOK: _github_webhook_problems,
    Need.ADO_WEBHOOK: _ado_webhook_problems,
    Need.GIT_SOURCE: _git_source_problems,
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (the environment is fixed once the host has started)."""
    return Settings.from_env()


def log_startup_problems(settings: Settings | None = None) -> None:
    """Name every missing or invalid setting in the host log when the app is loaded."""
    for need, found in (settings or get_settings()).startup_problems().items():
        for message in found:
            logging.getLogger("mlops.settings").warning("configuration (%s): %s", need, message)
