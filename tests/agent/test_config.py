"""Agent settings: file, environment and flags, validated at start with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings
from tests.procs import ROOT

KEY = "dcn_0123456789abcdef"


def _run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "var")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ((), {}, "platform_url: missing"),
        (("--platform-url", "ftp://example.com", "--api-key", KEY), {}, "--platform-url"),
        (("--api-key", KEY), {"DC_PLATFORM_URL": "example.com"}, "DC_PLATFORM_URL"),
        (("--platform-url", "https://dc.example.com"), {}, "api_key: missing"),
        (("--platform-url", "https://dc.example.com"), {"DC_API_KEY": "secret"}, "DC_API_KEY"),
        (
            (
                "--platform-url",
                "https://dc.example.com",
                "--api-key",
                KEY,
                "--heartbeat-interval",
                "0",
            ),
            {},
            "--heartbeat-interval",
        ),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY),
            {"DC_HEARTBEAT_INTERVAL": "often"},
            "DC_HEARTBEAT_INTERVAL",
        ),
        (
            (
                "--platform-url",
                "https://dc.example.com",
                "--api-key",
                KEY,
                "--frpc-bin",
                "/no/such/frpc",
            ),
            {},
            "--frpc-bin",
        ),
        (
            (
                "--platform-url",
                "https://dc.example.com",
                "--api-key",
                KEY,
                "--docker-host",
                "docker.sock",
            ),
            {},
            "--docker-host",
        ),
        (
            (
                "--platform-url",
                "https://dc.example.com",
                "--api-key",
                KEY,
                "--data-dir",
                "/proc/no-such-dir",
            ),
            {},
            "--data-dir",
        ),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY, "--publish-ip", "lan"),
            {},
            "--publish-ip",
        ),
        (("--config", "/no/such/config.toml"), {}, "--config"),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY, "--pids-limit", "3"),
            {},
            "--pids-limit",
        ),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY),
            {"DC_ALLOW_PRIVATE_REGISTRIES": "perhaps"},
            "DC_ALLOW_PRIVATE_REGISTRIES",
        ),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY),
            {"DC_AGENT_FAKE_GPUS": "four"},
            "DC_AGENT_FAKE_GPUS",
        ),
        (
            ("--platform-url", "https://dc.example.com", "--api-key", KEY, "--fake-gpus", "65"),
            {},
            "--fake-gpus",
        ),
    ],
)
def test_a_bad_setting_stops_the_agent_with_one_line_naming_it(args, env, named, tmp_path):
    if "--data-dir" not in args:
        args = (*args, "--data-dir", str(tmp_path))
    result = _run_agent(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dc-agent: invalid setting ") and named in lines[0]


def test_help_lists_every_flag():
    result = _run_agent("--help")
    assert result.returncode == 0
    for flag in (
        "--config",
        "--platform-url",
        "--api-key",
        "--docker-host",
        "--frpc-bin",
        "--data-dir",
        "--heartbeat-interval",
    ):
        assert flag in result.stdout


def test_the_file_is_overridden_by_the_environment_and_the_environment_by_flags(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'platform_url = "https://file.example.com"\napi_key = "{KEY}"\n'
        f'heartbeat_interval = 7\ndata_dir = "{tmp_path / "data"}"\n'
        'docker_host = "unix:///file.sock"\n'
    )
    settings = load_settings(["--config", str(config), "--frpc-bin", ""], {})
    assert settings.platform_url == "https://file.example.com"
    assert settings.ws_url == "wss://file.example.com/ws/agent"
    assert settings.heartbeat_interval == 7 and settings.docker_host == "unix:///file.sock"
    assert settings.frpc_bin is None and settings.config_file == config

    env = {
        "DC_PLATFORM_URL": "http://env.example.com:8000/",
        "DC_HEARTBEAT_INTERVAL": "2",
        "DOCKER_HOST": "unix:///env.sock",
    }
    settings = load_settings(["--config", str(config), "--heartbeat-interval", "3"], env)
    assert settings.ws_url == "ws://env.example.com:8000/ws/agent"
    assert settings.heartbeat_interval == 3
    assert settings.docker_host == "unix:///env.sock"
    assert settings.api_key == KEY  # only in the file


def _base_args(data_dir: Path) -> list[str]:
    return [
        "--platform-url",
        "https://dc.example.com",
        "--api-key",
        KEY,
        "--data-dir",
        str(data_dir),
    ]


def test_confinement_settings_default_to_careful_values_and_can_be_set(tmp_path: Path):
    base = _base_args(tmp_path)
    settings = load_settings(base, {})
    assert settings.pids_limit == 4096 and settings.allow_private_registries is False
    config = tmp_path / "config.toml"
    config.write_text("pids_limit = 512\nallow_private_registries = true\n")
    settings = load_settings([*base, "--config", str(config)], {})
    assert settings.pids_limit == 512 and settings.allow_private_registries is True
    settings = load_settings(
        [*base, "--config", str(config)], {"DC_ALLOW_PRIVATE_REGISTRIES": "no"}
    )
    assert settings.allow_private_registries is False


def test_fake_gpus_are_off_by_default_and_set_by_the_environment_file_or_flag(tmp_path: Path):
    base = _base_args(tmp_path)
    assert load_settings(base, {}).fake_gpus == 0
    assert load_settings(base, {"DC_AGENT_FAKE_GPUS": "4"}).fake_gpus == 4
    config = tmp_path / "config.toml"
    config.write_text("fake_gpus = 2\n")
    assert load_settings([*base, "--config", str(config)], {}).fake_gpus == 2
    assert load_settings([*base, "--fake-gpus", "8"], {"DC_AGENT_FAKE_GPUS": "4"}).fake_gpus == 8
    detected = subprocess.run(
        [sys.executable, "-m", "agent", "detect", "--json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DC_AGENT_FAKE_GPUS": "3"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    specs = json.loads(detected.stdout)
    assert specs["gpu_count"] == 3 and specs["gpu_model"] == "Fake GPU (DC_AGENT_FAKE_GPUS)"


def test_a_config_file_with_an_unknown_key_or_bad_toml_is_refused(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('platform_url = "https://dc.example.com"\napi_kye = "dcn_x"\n')
    with pytest.raises(ConfigError, match="api_kye"):
        load_settings(["--config", str(config)], {})
    config.write_text("platform_url = https://unquoted\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(["--config", str(config)], {})


def test_the_agent_imports_neither_flask_nor_sqlalchemy():
    code = (
        "import sys, agent.__main__, agent.daemon, agent.protocol, agent.config, "
        "agent.containers, agent.frpc, agent.hardware, agent.commands, agent.exits, "
        "agent.images, agent.inside, agent.libpod, agent.logs, agent.runspec, agent.tunnels; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('flask', 'sqlalchemy', 'app', 'workers'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == []
