"""Agent settings: a TOML file, then the environment, then flags (each overrides the one before).

Everything is validated once at start-up; a bad value raises :class:`ConfigError` naming the
setting, which ``python -m agent`` prints as one line before exiting with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import shutil
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from agent import __version__

DEFAULT_CONFIG_FILE = Path("/etc/dc-agent/config.toml")
WS_PATH = "/ws/agent"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# A test and development fake at the GPU boundary: the agent reports this many made-up GPUs instead
# of NVML's, so a machine without one can stand in for a multi-GPU node (docs/agent.md, "Fake GPUs").
FAKE_GPUS_ENV = "DC_AGENT_FAKE_GPUS"
MAX_FAKE_GPUS = 64  # the most GPUs the platform takes for one node


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""

    def __init__(self, setting: str, message: str):
        super().__init__(f"invalid setting {setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class AgentSettings:
    platform_url: str
    api_key: str
    docker_host: str | None
    frpc_bin: str | None
    data_dir: Path
    heartbeat_interval: float
    publish_ip: str
    log_level: str
    pids_limit: int = 4096
    allow_private_registries: bool = False
    fake_gpus: int = 0  # a test and development fake: see FAKE_GPUS_ENV
    config_file: Path | None = None

    @property
    def ws_url(self) -> str:
        """The agent endpoint: http(s) becomes ws(s), the path becomes /ws/agent."""
        parts = urlparse(self.platform_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/")
        if not path.endswith(WS_PATH):
            path += WS_PATH
        return urlunparse((scheme, parts.netloc, path, "", parts.query, ""))


@dataclass(frozen=True)
class _Option:
    name: str  # key in the TOML file and attribute of AgentSettings
    envs: tuple[str, ...]
    help: str


OPTIONS = (
    _Option(
        "platform_url",
        ("DC_PLATFORM_URL",),
        "platform URL, e.g. https://dc.example.com (the agent connects to <url>/ws/agent)",
    ),
    _Option(
        "api_key", ("DC_API_KEY",), "the node API key (dcn_...) shown when the node was registered"
    ),
    _Option(
        "docker_host",
        ("DC_DOCKER_HOST", "DOCKER_HOST"),
        "container engine URL (default: the engine's own default, unix:///var/run/docker.sock)",
    ),
    _Option(
        "frpc_bin", ("DC_FRPC_BIN",), "path of the frpc binary (default: frpc on PATH, if any)"
    ),
    _Option("data_dir", ("DC_DATA_DIR",), "folder for the frpc config and logs"),
    _Option(
        "heartbeat_interval", ("DC_HEARTBEAT_INTERVAL",), "seconds between heartbeats (default 5)"
    ),
    _Option(
        "publish_ip",
        ("DC_PUBLISH_IP",),
        "host address container ports are published on (default 127.0.0.1: frpc makes them public)",
    ),
    _Option("log_level", ("DC_LOG_LEVEL",), "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    _Option(
        "pids_limit",
        ("DC_PIDS_LIMIT",),
        "most processes in one rental's container, unless the platform sets it (default 4096)",
    ),
    _Option(
        "allow_private_registries",
        ("DC_ALLOW_PRIVATE_REGISTRIES",),
        "true to let rentals pull images from registries on private, loopback or link-local "
        "addresses (default false)",
    ),
    _Option(
        "fake_gpus",
        (FAKE_GPUS_ENV,),
        "TESTS AND DEVELOPMENT ONLY: report this many fake GPUs instead of the real ones "
        "(default 0); containers then need a CDI spec for them (docs/agent.md, Fake GPUs)",
    ),
)
_NAMES = {option.name for option in OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dc-agent",
        description="DistributedCompute host agent: connects this machine to the platform and runs "
        "rentals in containers. Settings come from --config, then DC_* variables, "
        "then these flags.",
        epilog="`dc-agent detect [--json]` prints this machine's hardware in the platform's specs "
        "shape (for `dc nodes register --detect`) without connecting.",
    )
    parser.add_argument("--version", action="version", version=f"dc-agent {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: {DEFAULT_CONFIG_FILE} when it exists)",
    )
    for option in OPTIONS:
        env = " or ".join(option.envs)
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            default=None,
            help=f"{option.help} [env {env}]",
        )
    return parser


def _default_data_dir() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/dc-agent")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "dc-agent"


def _read_file(path: Path, *, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            raise ConfigError("--config", f"{path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError("--config", f"{path} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML ({exc})") from None
    unknown = sorted(set(values) - _NAMES)
    if unknown:
        raise ConfigError(unknown[0], f"unknown key in {path} (known: {', '.join(sorted(_NAMES))})")
    return values


def _platform_url(value: Any) -> str:
    text = str(value).strip()
    parts = urlparse(text)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError("expected an http(s):// or ws(s):// URL such as https://dc.example.com")
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError:
        raise ValueError("the port is not a number") from None
    return text.rstrip("/")


def _api_key(value: Any) -> str:
    text = str(value).strip()
    if (
        not text.startswith("dcn_")
        or len(text) < 8
        or len(text) > 128
        or any(c.isspace() for c in text)
    ):
        raise ValueError("expected the node API key (dcn_...) shown when the node was registered")
    return text


def _docker_host(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    if urlparse(text).scheme not in ("unix", "tcp", "ssh", "npipe", "http", "https"):
        raise ValueError("expected a URL such as unix:///var/run/docker.sock or tcp://host:2376")
    return text


def _frpc_bin(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    found = shutil.which(text)
    if found is None:
        raise ValueError(f"{text} is not an executable file")
    return found


def _heartbeat(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(number) or not 0.2 <= number <= 300:
        raise ValueError("expected between 0.2 and 300 seconds")
    return number


def _publish_ip(value: Any) -> str:
    text = str(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return text


def _log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return text


def _data_dir(value: Any) -> Path:
    path = Path(str(value)).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ValueError(f"{path} cannot be created ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{path} is not writable")
    return path


def _pids_limit(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number of processes") from None
    if not 16 <= number <= 4_194_304:
        raise ValueError("expected between 16 and 4194304")
    return number


def parse_fake_gpus(value: Any) -> int:
    """The number of fake GPUs; ValueError outside 0..MAX_FAKE_GPUS."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number of fake GPUs (0 for the real ones)") from None
    if not 0 <= number <= MAX_FAKE_GPUS:
        raise ValueError(f"expected between 0 and {MAX_FAKE_GPUS}")
    return number


def fake_gpus_from_env(environ: Mapping[str, str] | None = None) -> int:
    """FAKE_GPUS_ENV from the environment, for `dc-agent detect` (which reads no other setting)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(FAKE_GPUS_ENV, "")
    if raw == "":
        return 0
    try:
        return parse_fake_gpus(raw)
    except ValueError as exc:
        raise ConfigError(FAKE_GPUS_ENV, str(exc)) from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "platform_url": _platform_url,
    "api_key": _api_key,
    "docker_host": _docker_host,
    "frpc_bin": _frpc_bin,
    "data_dir": _data_dir,
    "heartbeat_interval": _heartbeat,
    "publish_ip": _publish_ip,
    "log_level": _log_level,
    "pids_limit": _pids_limit,
    "allow_private_registries": _boolean,
    "fake_gpus": parse_fake_gpus,
}
_DEFAULTS: dict[str, Callable[[], Any]] = {
    "docker_host": lambda: None,
    "frpc_bin": lambda: shutil.which("frpc"),
    "data_dir": _default_data_dir,
    "heartbeat_interval": lambda: 5.0,
    "publish_ip": lambda: "127.0.0.1",
    "log_level": lambda: "INFO",
    "pids_limit": lambda: 4096,
    "allow_private_registries": lambda: False,
    "fake_gpus": lambda: 0,
}


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> AgentSettings:
    """Settings from the file, the environment and the flags; raises ConfigError."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    config_file = Path(args.config) if args.config else DEFAULT_CONFIG_FILE
    file_values = _read_file(config_file, explicit=bool(args.config))

    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw: Any = getattr(args, option.name)
        label = "--" + option.name.replace("_", "-")
        if raw is None:
            env = next((e for e in option.envs if environ.get(e, "") != ""), None)
            raw, label = (environ[env], env) if env else (None, label)
        if raw is None and option.name in file_values:
            raw, label = file_values[option.name], f"{option.name} in {config_file}"
        if raw is None:
            if option.name not in _DEFAULTS:
                envs = " or ".join(option.envs)
                raise ConfigError(
                    option.name, f"missing; set --{option.name.replace('_', '-')} or {envs}"
                )
            raw = _DEFAULTS[option.name]()
            if option.name != "data_dir":
                values[option.name] = raw
                continue
        try:
            values[option.name] = _PARSERS[option.name](raw)
        except ValueError as exc:
            raise ConfigError(label, str(exc)) from None
    return AgentSettings(**values, config_file=config_file if file_values else None)
