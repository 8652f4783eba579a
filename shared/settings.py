"""Typed app settings, read from the environment once; os.environ is read nowhere else in the app.

Locally (and under `func start`) the Values of local.settings.json are environment variables;
in Azure they are app settings (secrets as Key Vault references, resolved by the platform).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
DRIFT_SCHEDULE = "MLOPS_DRIFT_SCHEDULE"
APP_VERSION = "MLOPS_APP_VERSION"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_STORAGE = "UseDevelopmentStorage=true"

VERSION = "0.1.0"


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from an environment mapping (os.environ by default)."""
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        def num(name: str, default: float) -> float:
            raw = opt(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError as exc:
                raise ValueError(f"setting {name}={raw!r} is not a number") from exc

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
            git_source=opt(GIT_SOURCE) or "github",
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
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (the environment is fixed once the host has started)."""
    return Settings.from_env()
