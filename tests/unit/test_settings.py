"""Settings: read once, never raising; each function's needs answer 503 CONFIGURATION naming the setting."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.settings import Need, Settings, log_startup_problems

SAMPLE = json.loads((Path(__file__).parents[2] / "local.settings.sample.json").read_text())["Values"]
KV = "@Microsoft.KeyVault(SecretUri=https://vault.vault.azure.net/secrets/github-webhook-secret/)"
STORAGE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def problem(env: dict[str, str], need: Need) -> str:
    with pytest.raises(ConfigurationError) as err:
        Settings.from_env(env).require(need)
    assert err.value.status == 503 and err.value.code == "CONFIGURATION"
    return err.value.message


@pytest.mark.parametrize(("env", "need", "expected"), [
    # the shipped sample: a local git source without its path
    (SAMPLE, Need.GIT_SOURCE, "MLOPS_GIT_LOCAL_PATH is not set: the local git repository"),
    # the code's default source is github: its repository must be named
    ({}, Need.GIT_SOURCE, "MLOPS_GITHUB_REPOSITORY is not set: the GitHub repository (owner/name)"),
    ({"MLOPS_GITHUB_REPOSITORY": "no-slash"}, Need.GIT_SOURCE, "MLOPS_GITHUB_REPOSITORY is invalid"),
    ({"MLOPS_GIT_SOURCE": "azure-devops"}, Need.GIT_SOURCE, "MLOPS_ADO_ORG_URL is not set"),
    ({"MLOPS_GIT_SOURCE": "ado", "MLOPS_ADO_ORG_URL": "https://dev.azure.com/contoso", "MLOPS_ADO_PROJECT": "p"},
     Need.GIT_SOURCE, "MLOPS_ADO_REPOSITORY is not set"),
    ({"MLOPS_GIT_SOURCE": "svn"}, Need.GIT_SOURCE, "MLOPS_GIT_SOURCE is invalid (got 'svn')"),
    ({"MLOPS_GIT_SOURCE": "local", "MLOPS_GIT_LOCAL_PATH": "/r", "MLOPS_GIT_SPECS_FOLDER": "../x"},
     Need.GIT_SOURCE, "MLOPS_GIT_SPECS_FOLDER is invalid"),
    ({"MLOPS_GITHUB_REPOSITORY": "o/r", "MLOPS_GITHUB_TOKEN": KV}, Need.GIT_SOURCE,
     "MLOPS_GITHUB_TOKEN is an unresolved Key Vault reference"),
    # webhook secrets fail closed: missing, empty (whitespace) or an unresolved Key Vault reference
    ({}, Need.GITHUB_WEBHOOK, "MLOPS_GITHUB_WEBHOOK_SECRET is not set"),
    ({"MLOPS_GITHUB_WEBHOOK_SECRET": "   "}, Need.GITHUB_WEBHOOK, "MLOPS_GITHUB_WEBHOOK_SECRET is not set"),
    ({"MLOPS_GITHUB_WEBHOOK_SECRET": KV}, Need.GITHUB_WEBHOOK, "is an unresolved Key Vault reference"),
    ({"MLOPS_GITHUB_WEBHOOK_SECRET": KV.lower()}, Need.GITHUB_WEBHOOK, "is an unresolved Key Vault reference"),
    ({}, Need.ADO_WEBHOOK, "MLOPS_ADO_WEBHOOK_SECRET is not set"),
    ({"MLOPS_ADO_WEBHOOK_SECRET": KV}, Need.ADO_WEBHOOK, "MLOPS_ADO_WEBHOOK_SECRET is an unresolved Key Vault"),
    ({"MLOPS_ADO_WEBHOOK_USER": "hook"}, Need.ADO_WEBHOOK, "MLOPS_ADO_WEBHOOK_PASSWORD is not set"),
    ({"MLOPS_ADO_WEBHOOK_USER": "hook", "MLOPS_ADO_WEBHOOK_PASSWORD": KV}, Need.ADO_WEBHOOK,
     "MLOPS_ADO_WEBHOOK_PASSWORD is an unresolved Key Vault reference"),
    # storage
    ({}, Need.STORAGE, "AzureWebJobsStorage is not set"),
    ({"AzureWebJobsStorage": KV}, Need.STORAGE, "AzureWebJobsStorage is an unresolved Key Vault reference"),
    # numbers that cannot be read keep their default, and only the functions that use them refuse
    ({"MLOPS_PREDICTION_LOG_SAMPLE_RATE": "lots"}, Need.SCORING, "MLOPS_PREDICTION_LOG_SAMPLE_RATE is invalid"),
    ({"MLOPS_SCORING_MAX_BODY_BYTES": "-5"}, Need.SCORING, "use a number from 1"),
    ({"MLOPS_PARITY_MAX_ABS_DIFF": "nan"}, Need.VALIDATION, "MLOPS_PARITY_MAX_ABS_DIFF is invalid"),
])
def test_each_missing_or_bad_setting_is_named_with_what_it_is_for(env: dict[str, str], need: Need,
                                                                  expected: str) -> None:
    assert expected in problem(env, need)


@pytest.mark.parametrize(("env", "need"), [
    ({**STORAGE}, Need.STORAGE),
    ({"AzureWebJobsStorage__accountName": "acct"}, Need.STORAGE),
    ({"MLOPS_GIT_SOURCE": "local", "MLOPS_GIT_LOCAL_PATH": "/srv/specs"}, Need.GIT_SOURCE),
    ({"MLOPS_GITHUB_REPOSITORY": "contoso/ml-specs"}, Need.GIT_SOURCE),
    ({"MLOPS_GIT_SOURCE": "azure-devops", "MLOPS_ADO_ORG_URL": "https://dev.azure.com/c", "MLOPS_ADO_PROJECT": "p",
      "MLOPS_ADO_REPOSITORY": "r"}, Need.GIT_SOURCE),
    ({"MLOPS_GITHUB_WEBHOOK_SECRET": "s3cret"}, Need.GITHUB_WEBHOOK),
    ({"MLOPS_ADO_WEBHOOK_USER": "u", "MLOPS_ADO_WEBHOOK_PASSWORD": "p"}, Need.ADO_WEBHOOK),
    ({"MLOPS_PREDICTION_LOG_SAMPLE_RATE": "0.25"}, Need.SCORING),
])
def test_complete_settings_have_no_problem(env: dict[str, str], need: Need) -> None:
    Settings.from_env(env).require(need)


def test_a_bad_number_never_stops_the_app_from_loading() -> None:
    settings = Settings.from_env({"MLOPS_PREDICTION_LOG_FLUSH_ROWS": "many", **STORAGE})
    assert settings.prediction_log_flush_rows == 1000  # the default stands in
    settings.require(Need.STORAGE, Need.VALIDATION)  # other functions work


def test_the_host_log_names_every_problem_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlops.settings"):
        log_startup_problems(Settings.from_env(SAMPLE))
    assert "MLOPS_GIT_LOCAL_PATH is not set" in caplog.text
    assert "dev-webhook-secret" not in caplog.text  # secrets are never logged


def test_secrets_stay_out_of_the_settings_repr() -> None:
    text = repr(Settings.from_env({"MLOPS_GITHUB_WEBHOOK_SECRET": "s3cret", "MLOPS_ADO_PAT": "pat-value"}))
    assert "s3cret" not in text and "pat-value" not in text
