"""Settings: every process refuses to start on a missing or malformed variable, naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import ConfigError, load_settings
from tests.foundation.helpers import production_env, public_pem

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "distributedcompute: "

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PROD = production_env(public_pem(_KEY))

PROCESSES = {
    "api": [sys.executable, "-c", "import wsgi"],
    "worker": [sys.executable, "-m", "dramatiq", "workers", "--processes", "1", "--threads", "1"],
    "scheduler": [sys.executable, "-m", "workers.scheduler"],
}

BROKEN = {
    "production without CLERK_JWT_KEY": ({**PROD, "CLERK_JWT_KEY": ""}, "CLERK_JWT_KEY"),
    "DATABASE_URL of another engine": ({**os.environ, "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    "PROXY_PORT_RANGE backwards": ({**os.environ, "PROXY_PORT_RANGE": "9-1"}, "PROXY_PORT_RANGE"),
}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_production_environment_used_below_is_valid_on_its_own():
    settings = load_settings(environ=PROD)
    assert settings.is_production
    assert settings.dev_jwt_private_key is None


@pytest.mark.parametrize("process", ["api", "scheduler"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_variable_stops_the_process_with_one_line_naming_it(process, case):
    env, variable = BROKEN[case]
    result = _run(PROCESSES[process], env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX)
    assert variable in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_variable_stops_the_worker_with_exit_status_2_and_one_line_naming_it(case):
    env, variable = BROKEN[case]
    result = _run(PROCESSES["worker"], env)
    assert result.returncode == 2, result.stderr
    # Dramatiq logs its own boot lines; ours is the single line that explains why.
    ours = [line for line in result.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(ours) == 1, result.stderr
    assert variable in ours[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "secret", ["FRPS_TOKEN", "FRPS_PLUGIN_SECRET", "METRICS_TOKEN", "CLERK_JWT_KEY"]
)
def test_production_requires_every_secret(secret):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={k: v for k, v in PROD.items() if k != secret})
    assert secret in str(raised.value)


@pytest.mark.parametrize("secret", ["FRPS_TOKEN", "FRPS_PLUGIN_SECRET", "METRICS_TOKEN"])
def test_production_refuses_the_placeholder_secrets_of_env_example(secret):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={**PROD, secret: "change-me-please"})
    assert secret in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRPS_TOKEN", "dev-frps-token"),
        ("FRPS_TOKEN", "test-frps-token"),
        ("FRPS_PLUGIN_SECRET", "dev-plugin-secret"),
        ("FRPS_PLUGIN_SECRET", "test-plugin-secret"),
        ("METRICS_TOKEN", "dev-metrics-token"),
        ("METRICS_TOKEN", "change-me-too"),
        ("CLERK_ISSUER", "https://clerk.dev.localhost"),
        ("CLERK_ISSUER", "https://clerk.test.localhost/"),
        ("ADMIN_USER_IDS", "dev-admin"),
        ("ADMIN_USER_IDS", "user_2real,test-admin"),
        ("DATABASE_URL", "postgresql://postgres:postgres@db.example.com:5432/dc"),
        ("DATABASE_URL", "postgresql://dc:change-me@db.example.com:5432/dc"),
        ("DEV_JWT_PRIVATE_KEY", "var/dev-jwt-key.pem"),
    ],
)
def test_production_refuses_every_published_development_value(variable, value):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={**PROD, variable: value})
    assert variable in str(raised.value)


def test_production_accepts_a_database_password_of_its_own():
    url = "postgresql://dc:s3cr3t-7f1e@db.example.com:5432/dc"
    assert load_settings(environ={**PROD, "DATABASE_URL": url}).is_production


def test_the_published_development_values_work_in_development():
    dev = {**PROD, "APP_ENV": "development", "FRPS_TOKEN": "dev-frps-token"}
    assert load_settings(environ={**dev, "ADMIN_USER_IDS": "dev-admin"}).frps_token


def test_secrets_have_defaults_only_in_development_and_tests():
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FRPS_TOKEN", "FRPS_PLUGIN_SECRET", "METRICS_TOKEN")
    }
    settings = load_settings(environ={**environ, "APP_ENV": "development"})
    assert settings.frps_token and settings.frps_plugin_secret


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APP_ENV", "staging"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("INFLUXDB_URL", "127.0.0.1:8086"),
        ("INFLUXDB_RETENTION", "forever"),
        ("CLERK_JWT_KEY", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----"),
        ("CLERK_JWT_KEY", "does/not/exist.pem"),
        ("CLERK_JWKS_URL", "clerk.example.com/.well-known/jwks.json"),
        ("API_PORT", "70000"),
        ("FRPS_PORT", "port"),
        ("PROXY_PORT_RANGE", "20000"),
        ("PROXY_PORT_RANGE", "9-1"),
        ("HEARTBEAT_TIMEOUT_SECONDS", "0"),
        ("MIN_BALANCE_MINUTES", "-1"),
        ("PLATFORM_FEE_PERCENT", "100"),
        ("PLATFORM_FEE_PERCENT", "NaN"),
        ("MAX_CONTENT_LENGTH", "1MB"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_malformed_variable_is_named_in_the_error(variable, value):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={**os.environ, variable: value})
    message = str(raised.value)
    assert variable in message
    assert "\n" not in message


def _names_read_by_load_settings() -> set[str]:
    source = (ROOT / "app" / "config.py").read_text()
    calls = r"(?:Var|r\.(?:text|str|raw|parse|url)|env\.get|environ\.get|os\.environ\.get)"
    return set(re.findall(calls + r"\(\s*\"([A-Z][A-Z0-9_]+)\"", source))


def _names_in_env_example() -> dict[str, int]:
    names = {}
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines()):
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            names[match.group(1)] = number
    return names


def test_env_example_lists_every_variable_that_load_settings_reads():
    read = _names_read_by_load_settings()
    assert {"DATABASE_URL", "CLERK_JWT_KEY", "PROXY_PORT_RANGE", "METRICS_TOKEN"} <= read
    missing = read - set(_names_in_env_example())
    assert not missing, f"add these to .env.example with a comment: {sorted(missing)}"


def test_every_variable_in_env_example_sits_under_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    for name, number in _names_in_env_example().items():
        block_start = number
        while block_start > 0 and lines[block_start - 1].strip():
            block_start -= 1
        assert lines[block_start].startswith("#") and block_start < number, (
            f"{name} in .env.example has no comment above it"
        )


def test_env_example_as_written_is_a_valid_development_configuration():
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]+)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    settings = load_settings(environ={**values, "APP_ENV": "development"})
    assert settings.app_env == "development"
    with pytest.raises(ConfigError):
        load_settings(environ={**values, "APP_ENV": "production"})
