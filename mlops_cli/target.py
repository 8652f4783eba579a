"""Which API the CLI talks to and with which keys: flags, then a profile, then the environment, then local.

Profiles (`~/.config/mlops/profiles.toml`, or $MLOPS_PROFILES) name targets; keys should come from
environment variables the profile names rather than sit in the file:

    default = "local"
    [profiles.staging]
    url = "https://func-mlops-staging.azurewebsites.net/api"
    key_env = "MLOPS_STAGING_KEY"              # or key = "..."
    admin_key_env = "MLOPS_STAGING_ADMIN_KEY"  # or admin_key = "..."

Against a loopback URL with no key configured, the local host's keys come from local.settings.json
(or the sample) in the current folder or a parent: what `make run` serves with.
"""
from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlops_cli.errors import USAGE, CliError

DEFAULT_URL = "http://127.0.0.1:7071/api"
URL_ENV, KEY_ENV, ADMIN_KEY_ENV, PROFILE_ENV, PROFILES_ENV = (
    "MLOPS_URL", "MLOPS_KEY", "MLOPS_ADMIN_KEY", "MLOPS_PROFILE", "MLOPS_PROFILES")
LOCAL_SETTINGS = ("local.settings.json", "local.settings.sample.json")
BUILT_IN: dict[str, dict[str, Any]] = {"local": {"url": DEFAULT_URL}}


@dataclass(frozen=True)
class Key:
    """A key and where it came from (for the explanation of a 401)."""

    value: str | None
    origin: str


@dataclass(frozen=True)
class Target:
    """The API to talk to, its name for people, and the two keys."""

    name: str
    url: str
    key: Key
    admin_key: Key

    def label(self) -> str:
        return f"{self.name} ({self.url})"

    @property
    def local(self) -> bool:
        return urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Choice:
    """What the command line chose (None: not given)."""

    url: str | None = None
    key: str | None = None
    admin_key: str | None = None
    profile: str | None = None


def profiles_path(env: Mapping[str, str]) -> Path:
    if env.get(PROFILES_ENV):
        return Path(env[PROFILES_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "mlops" / "profiles.toml"


def load_profiles(path: Path) -> dict[str, Any]:
    """The profiles file as a dict ({} when absent). Raises CliError (usage) when it cannot be read."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the profiles file {path}: {exc}", USAGE) from None


def _profile(choice: Choice, env: Mapping[str, str]) -> tuple[str | None, dict[str, Any], Path]:
    """(name, table) of the chosen profile: --profile, then MLOPS_PROFILE, then the file's `default`."""
    path = profiles_path(env)
    document = load_profiles(path)
    tables = {**BUILT_IN, **document.get("profiles", {})}
    name = choice.profile or env.get(PROFILE_ENV) or document.get("default")
    if not name:
        return None, {}, path
    if name not in tables:
        known = ", ".join(sorted(tables))
        raise CliError(f"profile {name!r} is not in {path} (known: {known}); add a [profiles.{name}] table with "
                       "url = ... and key_env = ...", USAGE)
    if not isinstance(tables[name], dict) or not tables[name].get("url"):
        raise CliError(f"profile {name!r} in {path} has no url", USAGE)
    return str(name), dict(tables[name]), path


def _key(flag: str | None, flag_name: str, profile: str | None, table: Mapping[str, Any], field: str,
         env: Mapping[str, str], env_name: str) -> Key:
    if flag:
        return Key(flag, f"the {flag_name} option")
    if table.get(f"{field}_env"):
        variable = str(table[f"{field}_env"])
        return Key(env.get(variable) or None, f"${variable} (named by profile {profile!r})")
    if table.get(field):
        return Key(str(table[field]), f"{field} in profile {profile!r}")
    if env.get(env_name):
        return Key(env[env_name], f"${env_name}")
    return Key(None, "nowhere")


def resolve(choice: Choice, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Target:
    """The target of this command. Raises CliError (usage) for an unknown profile or unreadable file."""
    environ = os.environ if env is None else env
    name, table, _ = _profile(choice, environ)
    if choice.url:
        url, label = choice.url, "--url"
    elif table.get("url"):
        url, label = str(table["url"]), str(name)
    elif environ.get(URL_ENV):
        url, label = environ[URL_ENV], URL_ENV
    else:
        url, label = DEFAULT_URL, "local"
    target = Target(label, checked_url(url, label).rstrip("/"),
                    _key(choice.key, "--key", name, table, "key", environ, KEY_ENV),
                    _key(choice.admin_key, "--admin-key", name, table, "admin_key", environ, ADMIN_KEY_ENV))
    return _with_local_keys(target, cwd or Path.cwd()) if target.local else target


def checked_url(url: str, label: str) -> str:
    """The API's base URL if it is an http(s) URL with a host. Raises CliError (usage) naming where it came from."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise CliError(f"the API URL from {label} ({url!r}) is not a URL: {exc}; "
                       f"give one like {DEFAULT_URL}", USAGE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"the API URL from {label} ({url!r}) needs http:// or https:// and a host, "
                       f"like {DEFAULT_URL}", USAGE)
    return url


def _with_local_keys(target: Target, cwd: Path) -> Target:
    """Fill keys nobody configured from the local host's settings file (loopback targets only)."""
    if target.key.value and target.admin_key.value:
        return target
    for folder in (cwd, *cwd.parents):
        for name in LOCAL_SETTINGS:
            path = folder / name
            if path.is_file():
                return _keys_from(target, path)
    return target


def _keys_from(target: Target, path: Path) -> Target:
    try:
        dev = json.loads(path.read_text(encoding="utf-8")).get("DevHost", {})
    except (OSError, ValueError):
        return target
    function_keys = dev.get("FunctionKeys") or {}
    function_key = next(iter(function_keys.values()), None) or dev.get("MasterKey")
    key = target.key if target.key.value else Key(function_key, f"DevHost.FunctionKeys in {path}")
    admin = target.admin_key if target.admin_key.value else Key(dev.get("MasterKey"), f"DevHost.MasterKey in {path}")
    return Target(target.name, target.url, key, admin)
