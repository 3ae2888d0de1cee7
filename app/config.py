"""Settings read from the environment and validated at start-up.

Every process (API, socket server, workers, scheduler) calls :func:`load_settings` once. A missing
or malformed variable raises :class:`ConfigError` whose message names the variable and what is
expected; entry points print that single line and exit with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from app.env import (
    Reader,
    boolean,
    duration_literal,
    fernet_keys,
    log_level,
    non_negative_int,
    non_negative_money,
    percent,
    port,
    port_range,
    positive_int,
    positive_seconds,
    read_dotenv,
)

ENVIRONMENTS = ("development", "test", "production")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """One or more settings are missing or malformed."""


@dataclass(frozen=True)
class Settings:
    app_env: str
    database_url: str
    redis_url: str
    influxdb_url: str
    influxdb_database: str
    influxdb_token: str | None
    influxdb_retention: str
    clerk_jwt_key: str | None
    clerk_jwks_url: str | None
    clerk_issuer: str
    clerk_authorized_parties: tuple[str, ...]
    admin_user_ids: frozenset[str]
    dev_jwt_private_key: str | None
    public_proxy_host: str
    proxy_port_range: tuple[int, int]
    frps_addr: str
    frps_port: int
    frps_token: str
    frps_plugin_secret: str
    heartbeat_timeout_seconds: int
    rental_start_timeout_seconds: int
    rental_offline_grace_seconds: int
    min_balance_minutes: int
    billing_tick_seconds: int
    platform_fee_percent: Decimal
    pricing_interval_seconds: int
    reliability_interval_seconds: int
    search_cache_ttl_seconds: int
    metrics_token: str | None
    max_content_length: int
    log_level: str
    # Heartbeat metrics are written to InfluxDB in batches of up to this many points, at least
    # every metrics_flush_seconds (whichever comes first).
    metrics_batch_size: int = 5000
    metrics_flush_seconds: float = 1.0
    api_keys_per_user: int = 20  # live (unrevoked) user API keys
    ssh_keys_per_user: int = 50  # account SSH public keys
    # Webhooks (app/webhooks): see docs/webhooks.md.
    low_balance_minutes: int = 30
    webhook_allow_loopback: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_seconds: int = 3600
    webhook_retry_window_seconds: int = 86400
    webhook_sweep_seconds: int = 10
    webhook_max_subscriptions: int = 20
    webhook_max_payload_bytes: int = 65536
    # Fernet keys that seal a rental's registry_auth until it starts (the first one seals; all
    # open, for rotation). None: POST /rentals refuses registry_auth.
    registry_auth_keys: tuple[str, ...] | None = None
    logs_timeout_seconds: float = 5.0  # GET /rentals/{id}/logs waits this long for the agent
    # What one renter may hold at once (docs/security.md).
    max_live_rentals_per_user: int = 10
    max_ports_per_user: int = 100
    # A stop the agent does not confirm is sent again after this long, and the rental is ended
    # (ports quarantined, node flagged) after twice this long.
    rental_stop_timeout_seconds: int = 120
    # Ports of a rental whose container may still run stay out of the pool this long at most.
    port_quarantine_seconds: int = 86400
    # What one agent can make the platform store.
    agent_max_containers_per_hello: int = 500
    node_command_stream_max: int = 1000
    # Smart pricing never suggests less than this per hour for a whole node.
    pricing_floor_hourly_rate: Decimal = Decimal("0.0100")
    # Hosts: the self-test benchmark and maintenance windows (docs/hosts.md).
    self_test_image: str = "localhost/dc-bench:latest"
    # For nodes that declare GPUs: an image with a CUDA library (empty: self_test_image).
    self_test_gpu_image: str = ""
    self_test_timeout_seconds: int = 900
    self_test_disk_mb: int = 256
    self_test_ram_mb: int = 1024
    maintenance_notice_hours: int = 24
    # Payouts: a host's earnings are payable this many days after they are posted (docs/hosts.md).
    payout_hold_days: int = 7

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


def _read_pem(value: str | None) -> str | None:
    """Accept a PEM either inline (``\\n`` escapes allowed) or as a path to a file."""
    if not value:
        return None
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    path = Path(value)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return path.read_text()


def _is_public_pem(pem: str) -> bool:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Var:
    """One environment variable: how it is read, what it defaults to, what a bad value is told."""

    name: str
    parse: Callable[[str], Any] | None = None  # None: text, taken as it is
    expected: str = ""  # for the error message of a value `parse` refuses
    default: str | None = None
    dev_default: str | None = None  # development and test only (overrides `default` there)
    schemes: tuple[str, ...] = ()  # a URL with one of these schemes
    optional: bool = False
    optional_in_dev: bool = False
    secret: bool = False

    def read(self, r: Reader) -> Any:
        if self.schemes:
            return r.url(self.name, self.schemes, self.default, self.dev_default)
        if self.parse is not None:
            default = self.dev_default if r.dev and self.dev_default is not None else self.default
            return r.parse(self.name, default or "", self.parse, self.expected, secret=self.secret)
        return r.text(
            self.name,
            self.default,
            secret=self.secret,
            dev_default=self.dev_default,
            optional=self.optional or (self.optional_in_dev and r.dev),
        )


SECONDS = "a positive whole number of seconds"
# Development and test only (production has no default): not a secret.
DEV_REGISTRY_AUTH_KEY = "ZGV2LXJlZ2lzdHJ5LWF1dGgta2V5LW5vdC1hLXNlY3I="
PORT = "a TCP port 1-65535"

# Settings field -> its variable. The settings that combine several variables or derive from
# them (the database URL's driver, Clerk's keys, admins, the port range) are read in load_settings.
SETTINGS: dict[str, Var] = {
    "database_url": Var(
        "DATABASE_URL",
        schemes=("postgresql", "postgresql+psycopg2"),
        dev_default="postgresql+psycopg2://postgres@127.0.0.1:5432/distributedcompute",
    ),
    "redis_url": Var(
        "REDIS_URL", schemes=("redis", "rediss", "unix"), dev_default="redis://127.0.0.1:6379/0"
    ),
    "influxdb_url": Var(
        "INFLUXDB_URL", schemes=("http", "https"), dev_default="http://127.0.0.1:8086"
    ),
    "influxdb_database": Var("INFLUXDB_DATABASE", default="distributedcompute"),
    "influxdb_token": Var("INFLUXDB_TOKEN", optional=True),
    "influxdb_retention": Var(
        "INFLUXDB_RETENTION",
        duration_literal,
        "an InfluxQL duration such as 30d or 12w",
        default="30d",
    ),
    "clerk_issuer": Var("CLERK_ISSUER", dev_default="https://clerk.dev.localhost"),
    "public_proxy_host": Var("PUBLIC_PROXY_HOST", dev_default="127.0.0.1"),
    "frps_addr": Var("FRPS_ADDR", dev_default="127.0.0.1"),
    "frps_port": Var("FRPS_PORT", port, PORT, default="7000"),
    "frps_token": Var("FRPS_TOKEN", secret=True, dev_default="dev-frps-token"),
    "frps_plugin_secret": Var("FRPS_PLUGIN_SECRET", secret=True, dev_default="dev-plugin-secret"),
    "heartbeat_timeout_seconds": Var("HEARTBEAT_TIMEOUT_SECONDS", positive_int, SECONDS, "20"),
    "rental_start_timeout_seconds": Var(
        "RENTAL_START_TIMEOUT_SECONDS", positive_int, SECONDS, "120"
    ),
    "rental_offline_grace_seconds": Var(
        "RENTAL_OFFLINE_GRACE_SECONDS", positive_int, SECONDS, "600"
    ),
    "min_balance_minutes": Var(
        "MIN_BALANCE_MINUTES", non_negative_int, "a whole number of minutes >= 0", "60"
    ),
    "api_keys_per_user": Var("API_KEYS_PER_USER", positive_int, "a positive number", "20"),
    "ssh_keys_per_user": Var("SSH_KEYS_PER_USER", positive_int, "a positive number", "50"),
    "max_live_rentals_per_user": Var(
        "MAX_LIVE_RENTALS_PER_USER", positive_int, "a positive number", "10"
    ),
    "max_ports_per_user": Var("MAX_PORTS_PER_USER", positive_int, "a positive number", "100"),
    "rental_stop_timeout_seconds": Var("RENTAL_STOP_TIMEOUT_SECONDS", positive_int, SECONDS, "120"),
    "port_quarantine_seconds": Var("PORT_QUARANTINE_SECONDS", positive_int, SECONDS, "86400"),
    "agent_max_containers_per_hello": Var(
        "AGENT_MAX_CONTAINERS_PER_HELLO", positive_int, "a positive number (at most 1000)", "500"
    ),
    "node_command_stream_max": Var(
        "NODE_COMMAND_STREAM_MAX", positive_int, "a positive number of commands", "1000"
    ),
    "pricing_floor_hourly_rate": Var(
        "PRICING_FLOOR_HOURLY_RATE",
        non_negative_money,
        "a decimal amount per hour, 0 or more",
        "0.01",
    ),
    "billing_tick_seconds": Var("BILLING_TICK_SECONDS", positive_int, SECONDS, "60"),
    "platform_fee_percent": Var(
        "PLATFORM_FEE_PERCENT", percent, "a decimal percentage from 0 to below 100", "10"
    ),
    "pricing_interval_seconds": Var("PRICING_INTERVAL_SECONDS", positive_int, SECONDS, "900"),
    "reliability_interval_seconds": Var(
        "RELIABILITY_INTERVAL_SECONDS", positive_int, SECONDS, "300"
    ),
    "self_test_image": Var("SELF_TEST_IMAGE", default="localhost/dc-bench:latest"),
    "self_test_gpu_image": Var("SELF_TEST_GPU_IMAGE", default=""),
    "self_test_timeout_seconds": Var("SELF_TEST_TIMEOUT_SECONDS", positive_int, SECONDS, "900"),
    "self_test_disk_mb": Var("SELF_TEST_DISK_MB", positive_int, "a positive number of MiB", "256"),
    "self_test_ram_mb": Var("SELF_TEST_RAM_MB", positive_int, "a positive number of MiB", "1024"),
    "maintenance_notice_hours": Var(
        "MAINTENANCE_NOTICE_HOURS", non_negative_int, "a whole number of hours >= 0", "24"
    ),
    "payout_hold_days": Var(
        "PAYOUT_HOLD_DAYS", non_negative_int, "a whole number of days >= 0", "7"
    ),
    "search_cache_ttl_seconds": Var("SEARCH_CACHE_TTL_SECONDS", positive_int, SECONDS, "30"),
    "metrics_token": Var("METRICS_TOKEN", secret=True, optional_in_dev=True),
    "max_content_length": Var(
        "MAX_CONTENT_LENGTH", positive_int, "a positive number of bytes", "1048576"
    ),
    "log_level": Var("LOG_LEVEL", log_level, "DEBUG, INFO, WARNING or ERROR", "INFO"),
    "registry_auth_keys": Var(
        "REGISTRY_AUTH_KEY",
        fernet_keys,
        "Fernet keys (urlsafe base64 of 32 bytes), comma-separated, the newest first",
        secret=True,
    ),
    "logs_timeout_seconds": Var(
        "LOGS_TIMEOUT_SECONDS", positive_seconds, "a positive number of seconds (0.05 to 60)", "5"
    ),
    "metrics_batch_size": Var(
        "METRICS_BATCH_SIZE", positive_int, "a positive number of points", "5000"
    ),
    "metrics_flush_seconds": Var(
        "METRICS_FLUSH_SECONDS",
        positive_seconds,
        "a positive number of seconds (0.05 to 60)",
        "1",
    ),
    "low_balance_minutes": Var(
        "LOW_BALANCE_MINUTES", non_negative_int, "a whole number of minutes >= 0", "30"
    ),
    "webhook_allow_loopback": Var(
        "WEBHOOK_ALLOW_LOOPBACK", boolean, "true or false", default="false", dev_default="true"
    ),
    "webhook_timeout_seconds": Var(
        "WEBHOOK_TIMEOUT_SECONDS", positive_seconds, "seconds from 0.05 to 60", "10"
    ),
    "webhook_retry_base_seconds": Var(
        "WEBHOOK_RETRY_BASE_SECONDS", positive_seconds, "seconds from 0.05 to 60", "10"
    ),
    "webhook_retry_max_seconds": Var("WEBHOOK_RETRY_MAX_SECONDS", positive_int, SECONDS, "3600"),
    "webhook_retry_window_seconds": Var(
        "WEBHOOK_RETRY_WINDOW_SECONDS", positive_int, SECONDS, "86400"
    ),
    "webhook_sweep_seconds": Var("WEBHOOK_SWEEP_SECONDS", positive_int, SECONDS, "10"),
    "webhook_max_subscriptions": Var(
        "WEBHOOK_MAX_SUBSCRIPTIONS", positive_int, "a positive whole number", "20"
    ),
    "webhook_max_payload_bytes": Var(
        "WEBHOOK_MAX_PAYLOAD_BYTES", positive_int, "a positive number of bytes", "65536"
    ),
}

# Checked at start-up so that a bad value fails fast, but read by another program: API_PORT by
# gunicorn's configuration (deploy/gunicorn.conf.py) and the Makefile.
CHECKED_ONLY = (Var("API_PORT", port, PORT, default="8000"),)

# .env.example's placeholders are not secrets: a copied example must not reach production.
SECRETS = ("frps_token", "frps_plugin_secret", "metrics_token")
# Values that the development and test set-ups publish (.env.example, tests/conftest.py, the
# Makefile): anyone can read them, so production refuses them wherever they appear.
KNOWN_DEV_VALUES = frozenset(
    {
        "dev-frps-token",
        "dev-plugin-secret",
        "dev-metrics-token",
        "test-frps-token",
        "test-plugin-secret",
        "https://clerk.dev.localhost",
        "https://clerk.test.localhost",
        "dev-admin",
        "test-admin",
    }
)
_CHECKED_FOR_DEV_VALUES = (
    "FRPS_TOKEN",
    "FRPS_PLUGIN_SECRET",
    "METRICS_TOKEN",
    "CLERK_ISSUER",
    "CLERK_JWKS_URL",
    "INFLUXDB_TOKEN",
)


def development_values(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """What in a production configuration is a published development value (one line each)."""
    problems = []
    for name in _CHECKED_FOR_DEV_VALUES:
        value = (env.get(name) or "").strip()
        if value.startswith("change-me"):
            problems.append(f"{name} is still the .env.example placeholder: set a real secret")
        elif value.rstrip("/") in KNOWN_DEV_VALUES or value.startswith(
            ("https://clerk.dev.localhost/", "https://clerk.test.localhost/")
        ):
            problems.append(f"{name} is a published development value: set your own")
    for admin in sorted(settings.admin_user_ids & KNOWN_DEV_VALUES):
        problems.append(f"ADMIN_USER_IDS lists the development admin {admin!r}: list real ones")
    password = urlparse(settings.database_url).password
    if password in ("postgres", "password") or (password or "").startswith("change-me"):
        problems.append(
            "DATABASE_URL uses a published development password: set the database's real one"
        )
    if (env.get("DEV_JWT_PRIVATE_KEY") or "").strip():
        problems.append(
            "DEV_JWT_PRIVATE_KEY is set: development tokens are never accepted in production; "
            "unset it"
        )
    return problems


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate every platform setting; raise ConfigError naming what is wrong."""
    env: dict[str, str] = {}
    if environ is None:
        if dotenv and not os.environ.get("DC_NO_DOTENV"):
            env.update(read_dotenv(PROJECT_ROOT / ".env"))
        env.update(os.environ)
    else:
        env.update(environ)

    app_env = (env.get("APP_ENV") or "production").strip()
    problems: list[str] = []
    if app_env not in ENVIRONMENTS:
        problems.append(
            f"APP_ENV={app_env!r} is invalid: expected one of {', '.join(ENVIRONMENTS)}"
        )
    dev = app_env in ("development", "test")
    r = Reader(env, dev)
    r.problems = problems

    values = {name: var.read(r) for name, var in SETTINGS.items()}
    for var in CHECKED_ONLY:
        var.read(r)
    if values["database_url"].startswith("postgresql://"):
        values["database_url"] = "postgresql+psycopg2://" + values["database_url"][13:]
    values["influxdb_url"] = (values["influxdb_url"] or "").rstrip("/")
    values.update(_clerk_settings(r, dev))
    if values["registry_auth_keys"] is None and dev:
        values["registry_auth_keys"] = (DEV_REGISTRY_AUTH_KEY,)
    low, high = r.parse(
        "PROXY_PORT_RANGE", "20000-20999", port_range, "two ports as START-END, START <= END"
    ) or (0, 0)
    settings = Settings(app_env=app_env, proxy_port_range=(low, high), **values)
    if not dev:
        problems.extend(development_values(settings, env))
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return settings


def _clerk_settings(r: Reader, dev: bool) -> dict[str, Any]:
    """How Clerk session tokens are verified, and who the admins are."""
    clerk_jwt_key_raw = r.text("CLERK_JWT_KEY", optional=True)
    try:
        clerk_jwt_key = _read_pem(clerk_jwt_key_raw)
    except OSError as exc:
        r.problems.append(f"CLERK_JWT_KEY: cannot read the key file ({exc.strerror})")
        clerk_jwt_key = None
    if clerk_jwt_key is not None and not _is_public_pem(clerk_jwt_key):
        r.problems.append(
            "CLERK_JWT_KEY is invalid: expected a PEM public key (text or a file path)"
        )
        clerk_jwt_key = None
    clerk_jwks_url = r.text("CLERK_JWKS_URL", optional=True)
    if clerk_jwks_url is not None:
        parsed_jwks = urlparse(clerk_jwks_url)
        if parsed_jwks.scheme not in ("http", "https") or not parsed_jwks.netloc:
            r.problems.append(
                f"CLERK_JWKS_URL={clerk_jwks_url!r} is invalid: expected a URL "
                "starting with https:// (or http://)"
            )
    dev_key_path = r.text(
        "DEV_JWT_PRIVATE_KEY",
        optional=True,
        dev_default=str(PROJECT_ROOT / "var" / "dev-jwt-key.pem"),
    )
    if clerk_jwt_key is None and clerk_jwks_url is None and not (dev and dev_key_path):
        # (In development the key is derived from the development key at start-up.)
        r.problems.append(
            "CLERK_JWT_KEY or CLERK_JWKS_URL is required: the key that verifies "
            "Clerk session tokens (PEM text or a file path, or the JWKS URL)"
        )
    parties = tuple(
        p.strip() for p in (r.raw("CLERK_AUTHORIZED_PARTIES") or "").split(",") if p.strip()
    )
    admins = frozenset(
        a.strip()
        for a in (r.raw("ADMIN_USER_IDS") or ("dev-admin" if dev else "")).split(",")
        if a.strip()
    )
    return {
        "clerk_jwt_key": clerk_jwt_key,
        "clerk_jwks_url": clerk_jwks_url,
        "clerk_authorized_parties": parties,
        "admin_user_ids": admins,
        "dev_jwt_private_key": dev_key_path if dev else None,
    }


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def load_or_exit() -> Settings:
    """Entry-point helper: load settings or print the one-line reason and exit(2)."""
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"distributedcompute: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
