"""Settings read from the environment and validated at start-up.

Every process (API, socket server, workers, scheduler) calls :func:`load_settings` once. A missing
or malformed variable raises :class:`ConfigError` whose message names the variable and what is
expected; entry points print that single line and exit with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
    api_port: int
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
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Heartbeat metrics are written to InfluxDB in batches of up to this many points, at least
    # every metrics_flush_seconds (whichever comes first).
    metrics_batch_size: int = 5000
    metrics_flush_seconds: float = 1.0
    api_keys_per_user: int = 20  # live (unrevoked) user API keys
    ssh_keys_per_user: int = 50  # account SSH public keys

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


class _Reader:
    """Collects every problem so the error names all bad variables at once."""

    def __init__(self, environ: Mapping[str, str], dev: bool):
        self.environ = environ
        self.dev = dev
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(
        self,
        name: str,
        default: str | None = None,
        *,
        secret: bool = False,
        dev_default: str | None = None,
        optional: bool = False,
    ) -> Any:
        value = self.raw(name)
        if value is not None:
            return value
        if default is not None:
            return default
        if dev_default is not None and self.dev:
            return dev_default
        if optional:
            return None
        what = "a secret value" if secret else "a value"
        self.problems.append(f"{name} is required ({what}; see .env.example)")
        return ""

    def parse(self, name: str, default: str, parser: Callable[[str], Any], expected: str) -> Any:
        value = self.raw(name) or default
        try:
            return parser(value)
        except (ValueError, InvalidOperation, TypeError):
            self.problems.append(f"{name}={value!r} is invalid: expected {expected}")
            return None

    def url(
        self,
        name: str,
        schemes: tuple[str, ...],
        default: str | None = None,
        dev_default: str | None = None,
    ) -> str:
        value: str = self.text(name, default, dev_default=dev_default)
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
                self.problems.append(
                    f"{name}={value!r} is invalid: expected a URL starting with "
                    + " or ".join(f"{s}://" for s in schemes)
                )
        return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError(value)
    return number


def _port_range(value: str) -> tuple[int, int]:
    start_s, _, end_s = value.partition("-")
    start, end = _port(start_s), _port(end_s)
    if start > end:
        raise ValueError(value)
    return start, end


def _percent(value: str) -> Decimal:
    number = Decimal(value)
    if not number.is_finite() or not Decimal(0) <= number < Decimal(100):
        raise ValueError(value)
    return number


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


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate every platform setting; raise ConfigError naming what is wrong."""
    env: dict[str, str] = {}
    if environ is None:
        if dotenv and not os.environ.get("DC_NO_DOTENV"):
            env.update(_read_dotenv(PROJECT_ROOT / ".env"))
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
    r = _Reader(env, dev)
    r.problems = problems

    database_url = r.url(
        "DATABASE_URL",
        ("postgresql", "postgresql+psycopg2"),
        dev_default="postgresql+psycopg2://postgres@127.0.0.1:5432/distributedcompute",
    )
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg2://" + database_url[len("postgresql://") :]
    redis_url = r.url(
        "REDIS_URL", ("redis", "rediss", "unix"), dev_default="redis://127.0.0.1:6379/0"
    )
    influxdb_url = r.url("INFLUXDB_URL", ("http", "https"), dev_default="http://127.0.0.1:8086")

    clerk_jwt_key_raw = r.text("CLERK_JWT_KEY", optional=True)
    try:
        clerk_jwt_key = _read_pem(clerk_jwt_key_raw)
    except OSError as exc:
        problems.append(f"CLERK_JWT_KEY: cannot read the key file ({exc.strerror})")
        clerk_jwt_key = None
    if clerk_jwt_key is not None and not _is_public_pem(clerk_jwt_key):
        problems.append("CLERK_JWT_KEY is invalid: expected a PEM public key (text or a file path)")
        clerk_jwt_key = None
    clerk_jwks_url = r.text("CLERK_JWKS_URL", optional=True)
    if clerk_jwks_url is not None:
        parsed_jwks = urlparse(clerk_jwks_url)
        if parsed_jwks.scheme not in ("http", "https") or not parsed_jwks.netloc:
            problems.append(
                f"CLERK_JWKS_URL={clerk_jwks_url!r} is invalid: expected a URL "
                "starting with https:// (or http://)"
            )
    dev_key_path = r.text(
        "DEV_JWT_PRIVATE_KEY",
        optional=True,
        dev_default=str(PROJECT_ROOT / "var" / "dev-jwt-key.pem"),
    )
    if clerk_jwt_key is None and clerk_jwks_url is None:
        if dev and dev_key_path:
            clerk_jwt_key = None  # derived from the development key at start-up (see auth.tokens)
        else:
            problems.append(
                "CLERK_JWT_KEY or CLERK_JWKS_URL is required: the key that verifies "
                "Clerk session tokens (PEM text or a file path, or the JWKS URL)"
            )
    clerk_issuer = r.text("CLERK_ISSUER", dev_default="https://clerk.dev.localhost")
    parties = tuple(
        p.strip() for p in (r.raw("CLERK_AUTHORIZED_PARTIES") or "").split(",") if p.strip()
    )
    admins = frozenset(
        a.strip()
        for a in (r.raw("ADMIN_USER_IDS") or ("dev-admin" if dev else "")).split(",")
        if a.strip()
    )
    if not dev:
        dev_key_path = None

    low, high = r.parse(
        "PROXY_PORT_RANGE", "20000-20999", _port_range, "two ports as START-END, START <= END"
    ) or (0, 0)

    settings = Settings(
        app_env=app_env,
        database_url=database_url,
        redis_url=redis_url,
        influxdb_url=influxdb_url.rstrip("/") if influxdb_url else "",
        influxdb_database=r.text("INFLUXDB_DATABASE", "distributedcompute"),
        influxdb_token=r.text("INFLUXDB_TOKEN", optional=True),
        influxdb_retention=r.parse(
            "INFLUXDB_RETENTION",
            "30d",
            _duration_literal,
            "an InfluxQL duration such as 30d or 12w",
        ),
        clerk_jwt_key=clerk_jwt_key,
        clerk_jwks_url=clerk_jwks_url,
        clerk_issuer=clerk_issuer,
        clerk_authorized_parties=parties,
        admin_user_ids=admins,
        dev_jwt_private_key=dev_key_path,
        api_port=r.parse("API_PORT", "8000", _port, "a TCP port 1-65535"),
        public_proxy_host=r.text("PUBLIC_PROXY_HOST", dev_default="127.0.0.1"),
        proxy_port_range=(low, high),
        frps_addr=r.text("FRPS_ADDR", dev_default="127.0.0.1"),
        frps_port=r.parse("FRPS_PORT", "7000", _port, "a TCP port 1-65535"),
        frps_token=r.text("FRPS_TOKEN", secret=True, dev_default="dev-frps-token"),
        frps_plugin_secret=r.text(
            "FRPS_PLUGIN_SECRET", secret=True, dev_default="dev-plugin-secret"
        ),
        heartbeat_timeout_seconds=r.parse(
            "HEARTBEAT_TIMEOUT_SECONDS", "20", _positive_int, "a positive whole number of seconds"
        ),
        rental_start_timeout_seconds=r.parse(
            "RENTAL_START_TIMEOUT_SECONDS",
            "120",
            _positive_int,
            "a positive whole number of seconds",
        ),
        rental_offline_grace_seconds=r.parse(
            "RENTAL_OFFLINE_GRACE_SECONDS",
            "600",
            _positive_int,
            "a positive whole number of seconds",
        ),
        min_balance_minutes=r.parse(
            "MIN_BALANCE_MINUTES", "60", _non_negative_int, "a whole number of minutes >= 0"
        ),
        billing_tick_seconds=r.parse(
            "BILLING_TICK_SECONDS", "60", _positive_int, "a positive whole number of seconds"
        ),
        platform_fee_percent=r.parse(
            "PLATFORM_FEE_PERCENT", "10", _percent, "a decimal percentage from 0 to below 100"
        ),
        pricing_interval_seconds=r.parse(
            "PRICING_INTERVAL_SECONDS", "900", _positive_int, "a positive whole number of seconds"
        ),
        reliability_interval_seconds=r.parse(
            "RELIABILITY_INTERVAL_SECONDS",
            "300",
            _positive_int,
            "a positive whole number of seconds",
        ),
        search_cache_ttl_seconds=r.parse(
            "SEARCH_CACHE_TTL_SECONDS", "30", _positive_int, "a positive whole number of seconds"
        ),
        metrics_token=r.text("METRICS_TOKEN", secret=True, optional=dev, dev_default=None),
        max_content_length=r.parse(
            "MAX_CONTENT_LENGTH", "1048576", _positive_int, "a positive number of bytes"
        ),
        log_level=r.parse("LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
        metrics_batch_size=r.parse(
            "METRICS_BATCH_SIZE", "5000", _positive_int, "a positive number of points"
        ),
        metrics_flush_seconds=r.parse(
            "METRICS_FLUSH_SECONDS",
            "1",
            _positive_seconds,
            "a positive number of seconds (0.05 to 60)",
        ),
        api_keys_per_user=r.parse("API_KEYS_PER_USER", "20", _positive_int, "a positive number"),
        ssh_keys_per_user=r.parse("SSH_KEYS_PER_USER", "50", _positive_int, "a positive number"),
    )
    if not dev:
        # .env.example's placeholders are not secrets: a copied example must not reach production.
        for name, value in (
            ("FRPS_TOKEN", settings.frps_token),
            ("FRPS_PLUGIN_SECRET", settings.frps_plugin_secret),
            ("METRICS_TOKEN", settings.metrics_token),
        ):
            if value and value.startswith("change-me"):
                problems.append(f"{name} is still the .env.example placeholder: set a real secret")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return settings


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _positive_seconds(value: str) -> float:
    number = float(value)
    if not 0.05 <= number <= 60:
        raise ValueError(value)
    return number


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(value)
    return level


def _duration_literal(value: str) -> str:
    value = value.strip()
    if value.upper() == "INF":
        return "INF"
    if len(value) < 2 or not value[:-1].isdigit() or value[-1] not in "hdw":
        raise ValueError(value)
    return value


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def set_settings(settings: Settings | None) -> None:
    global _settings
    _settings = settings


def load_or_exit() -> Settings:
    """Entry-point helper: load settings or print the one-line reason and exit(2)."""
    import sys

    try:
        return get_settings()
    except ConfigError as exc:
        print(f"distributedcompute: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
