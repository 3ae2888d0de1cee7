"""Test set-up against the real services.

Each pytest-xdist worker gets its own PostgreSQL database (built by running the migrations), its
own Redis database number and its own InfluxDB database. Tests are isolated by truncating every
table and flushing that Redis database after each test (truncation rather than a rolled-back
transaction, because many tests involve worker and server processes with their own connections).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# DC_TEST_SLOT (0-6) lets several test runs share one machine without sharing state.
SLOT = int(os.environ.get("DC_TEST_SLOT", "0"))
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
WORKER_INDEX = SLOT * 2 + int(WORKER.removeprefix("gw") or 0)
DB_NAME = f"dc_test_{SLOT}_{WORKER}"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0]

TEST_ENV = {
    "APP_ENV": "test",
    "DC_NO_DOTENV": "1",
    "DATABASE_URL": f"{PG_BASE}/{DB_NAME}".replace("postgresql://", "postgresql+psycopg2://"),
    "REDIS_URL": f"redis://127.0.0.1:6379/{1 + WORKER_INDEX}",
    "INFLUXDB_URL": os.environ.get("TEST_INFLUXDB_URL", "http://127.0.0.1:8086"),
    "INFLUXDB_DATABASE": f"dc_test_{SLOT}_{WORKER}",
    "DEV_JWT_PRIVATE_KEY": str(ROOT / "var" / "test-jwt-key.pem"),
    "CLERK_ISSUER": "https://clerk.test.localhost",
    "ADMIN_USER_IDS": "test-admin",
    "DOCKER_HOST": os.environ.get("DOCKER_HOST", f"unix://{ROOT}/var/podman/podman.sock"),
    "LOG_LEVEL": "WARNING",
    "FRPS_PLUGIN_SECRET": "test-plugin-secret",
    "FRPS_TOKEN": "test-frps-token",
    "PROXY_PORT_RANGE": f"{21000 + WORKER_INDEX * 500}-{21499 + WORKER_INDEX * 500}",
}
for _key in ("CLERK_JWT_KEY", "CLERK_JWKS_URL", "CLERK_AUTHORIZED_PARTIES", "METRICS_TOKEN"):
    os.environ.pop(_key, None)
os.environ.update(TEST_ENV)

import pytest  # noqa: E402
from sqlalchemy import text  # noqa: E402

pytest_plugins = ["tests.fixtures", "tests.images.fixtures"]


def _create_database() -> None:
    from tests.dbutil import recreate_database

    recreate_database(DB_NAME, env=TEST_ENV)


@pytest.fixture(scope="session", autouse=True)
def _database():
    _create_database()
    yield


@pytest.fixture(scope="session")
def settings():
    from app.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def app(_database, settings):
    from app import create_app

    application = create_app(settings)
    application.testing = True
    return application


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Leave every table empty and the worker's Redis database flushed after each test."""
    yield
    from app.db import get_engine
    from app.redis_client import get_redis

    engine = get_engine()
    tables = [t for t in _table_names(engine) if t != "alembic_version"]
    if tables:
        _truncate(engine, tables)
    get_redis().flushdb()


_tables: list[str] | None = None


def _truncate(engine, tables: list[str], attempts: int = 5) -> None:
    """TRUNCATE every table; a server or worker process of the test may still be finishing a
    transaction, and PostgreSQL may pick the TRUNCATE as the victim of a deadlock: try again."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _table_names(engine) -> list[str]:
    global _tables
    if _tables is None:
        with engine.connect() as conn:
            _tables = [
                row[0]
                for row in conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ]
    return _tables
