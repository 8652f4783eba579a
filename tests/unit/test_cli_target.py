"""Which API `mlops` talks to, with which keys: flags, then the profile, then the environment, then the local
host's settings file (loopback URLs only)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_cli.errors import USAGE, CliError
from mlops_cli.target import DEFAULT_URL, Choice, resolve

PROFILES = """
default = "local"
[profiles.staging]
url = "https://func-staging.example.net/api/"
key_env = "STAGING_KEY"
admin_key_env = "STAGING_ADMIN_KEY"
[profiles.inline]
url = "https://inline.example.net/api"
key = "inline-key"
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "profiles.toml").write_text(PROFILES)
    return {"MLOPS_PROFILES": str(tmp_path / "profiles.toml")}


def test_nothing_configured_is_the_local_host_without_keys(tmp_path: Path) -> None:
    target = resolve(Choice(), {"MLOPS_PROFILES": str(tmp_path / "none.toml")}, cwd=tmp_path)
    assert (target.name, target.url, target.key.value, target.admin_key.value) == ("local", DEFAULT_URL, None, None)
    assert target.label() == f"local ({DEFAULT_URL})"


def test_a_profile_takes_its_url_and_the_keys_from_the_variables_it_names(home: dict[str, str],
                                                                          tmp_path: Path) -> None:
    env = {**home, "STAGING_KEY": "s-key", "STAGING_ADMIN_KEY": "s-admin", "MLOPS_KEY": "ambient",
           "MLOPS_URL": "http://ambient/api"}
    target = resolve(Choice(profile="staging"), env, cwd=tmp_path)
    assert (target.name, target.url) == ("staging", "https://func-staging.example.net/api")
    assert (target.key.value, target.key.origin) == ("s-key", "$STAGING_KEY (named by profile 'staging')")
    assert target.admin_key.value == "s-admin"


def test_mlops_profile_chooses_like_the_flag_and_the_flag_wins(home: dict[str, str], tmp_path: Path) -> None:
    env = {**home, "MLOPS_PROFILE": "inline"}
    assert resolve(Choice(), env, cwd=tmp_path).key.value == "inline-key"
    assert resolve(Choice(profile="staging"), env, cwd=tmp_path).name == "staging"


def test_flags_beat_the_profile(home: dict[str, str], tmp_path: Path) -> None:
    target = resolve(Choice(url="http://other/api", key="k", admin_key="a", profile="staging"), home, cwd=tmp_path)
    assert (target.name, target.url, target.key.value, target.admin_key.value) == ("--url", "http://other/api", "k",
                                                                                   "a")
    assert target.key.origin == "the --key option"


def test_the_environment_applies_when_no_profile_is_chosen(tmp_path: Path) -> None:
    env = {"MLOPS_PROFILES": str(tmp_path / "none.toml"), "MLOPS_URL": "https://x.example.net/api",
           "MLOPS_KEY": "k", "MLOPS_ADMIN_KEY": "a"}
    target = resolve(Choice(), env, cwd=tmp_path)
    assert (target.name, target.url, target.key.origin, target.admin_key.value) == (
        "MLOPS_URL", "https://x.example.net/api", "$MLOPS_KEY", "a")


def test_a_variable_the_profile_names_but_nobody_set_is_no_key(home: dict[str, str], tmp_path: Path) -> None:
    target = resolve(Choice(profile="staging"), {**home, "MLOPS_KEY": "ambient"}, cwd=tmp_path)
    assert target.key.value is None and "STAGING_KEY" in target.key.origin  # never another target's key


def test_the_file_default_is_the_built_in_local_profile(home: dict[str, str], tmp_path: Path) -> None:
    assert resolve(Choice(), home, cwd=tmp_path).url == DEFAULT_URL


def test_loopback_targets_take_the_local_hosts_keys_from_a_parent_folder(tmp_path: Path) -> None:
    settings = {"DevHost": {"FunctionKeys": {"default": "fk"}, "MasterKey": "mk"}}
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    (tmp_path / "sub").mkdir()
    target = resolve(Choice(), {"MLOPS_PROFILES": str(tmp_path / "none.toml")}, cwd=tmp_path / "sub")
    assert (target.key.value, target.admin_key.value) == ("fk", "mk")
    assert target.key.origin == f"DevHost.FunctionKeys in {tmp_path / 'local.settings.json'}"
    remote = resolve(Choice(url="https://remote.example.net/api"), {"MLOPS_PROFILES": "none"}, cwd=tmp_path / "sub")
    assert remote.key.value is None  # never send the local keys anywhere else


@pytest.mark.parametrize(("text", "words"), [
    ("default = 'nope'\n", "profile 'nope' is not in"),
    ("[profiles.broken]\nkey = 'x'\n", "has no url"),
    ("this is not toml", "cannot read the profiles file"),
])
def test_profile_problems_are_usage_errors(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "p.toml").write_text(text)
    choice = Choice(profile="broken") if "broken" in text else Choice()
    with pytest.raises(CliError) as refused:
        resolve(choice, {"MLOPS_PROFILES": str(tmp_path / "p.toml")}, cwd=tmp_path)
    assert refused.value.code == USAGE and words in refused.value.message


@pytest.mark.parametrize(("url", "words"), [
    ("127.0.0.1:7071/api", "needs http:// or https:// and a host"),
    ("file:///etc/passwd", "needs http:// or https://"),
    ("https://", "needs http:// or https://"),
    ("http://[::1/api", "is not a URL: Invalid IPv6 URL"),
    ("http://h:99999/api", "is not a URL: Port out of range"),
])
def test_a_malformed_api_url_is_a_usage_error_naming_where_it_came_from(url: str, words: str) -> None:
    with pytest.raises(CliError) as caught:
        resolve(Choice(None, None, None, None), env={"MLOPS_URL": url, "MLOPS_PROFILES": "/nonexistent.toml"})
    assert caught.value.code == USAGE and f"from MLOPS_URL ({url!r})" in caught.value.message
    assert words in caught.value.message
