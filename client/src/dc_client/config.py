"""Where `dc` finds the API and the key: flags, then the environment, then the config file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dc_client.client import DEFAULT_URL

ENV_URL = "DC_API_URL"
ENV_KEY = "DC_API_KEY"
ENV_CONFIG = "DC_CONFIG"  # a config file path that replaces the default one


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$DC_CONFIG`, else `$XDG_CONFIG_HOME/dc/config.json`, else `~/.config/dc/config.json`."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "dc" / "config.json"


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write the file readable by its owner only (0600), in a 0700 folder when we create it.

    The file is created with that mode, never widened then narrowed, and a file that exists
    with wider permissions is narrowed before the key is written to it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(dict(data), indent=2) + "\n").encode())
    finally:
        os.close(fd)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_key: str | None
    source: str  # where the key came from, for messages: "flag", "env", the file's path, "none"


def resolve(
    *,
    flag_url: str | None,
    flag_key: str | None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    path = config_path(env)
    stored = read_config(path)
    url = flag_url or env.get(ENV_URL) or stored.get("api_url") or DEFAULT_URL
    if flag_key:
        key, source = flag_key, "flag"
    elif env.get(ENV_KEY):
        key, source = env[ENV_KEY], "env"
    elif stored.get("api_key"):
        key, source = str(stored["api_key"]), str(path)
    else:
        key, source = None, "none"
    return Settings(api_url=str(url).rstrip("/"), api_key=key, source=source)
