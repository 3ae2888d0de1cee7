"""Migrations: down to base and up to head on an empty database, and no drift from the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import PG_BASE, SLOT
from tests.dbutil import admin_execute

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = f"dc_test_migr_{SLOT}"
URL = f"{PG_BASE}/{DB_NAME}"


def _admin(sql: str) -> None:
    admin_execute(DB_NAME, sql)


def _alembic(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": URL}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"alembic {' '.join(args)} failed:\n{result.stdout[:3000]}\n{result.stderr[-3000:]}"
    )
    return result


def _query(sql: str) -> list[tuple]:
    conn = psycopg2.connect(URL)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _tables() -> set[str]:
    return {row[0] for row in _query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _enum_types() -> set[str]:
    return {
        row[0]
        for row in _query(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'"
        )
    }


@pytest.fixture
def empty_database():
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    yield
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}"')


def test_migrations_have_a_single_head():
    result = _alembic("heads")
    heads = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(heads) == 1, result.stdout


def test_upgrade_to_head_then_downgrade_to_base_then_upgrade_again_on_an_empty_database(
    empty_database,
):
    _alembic("upgrade", "head")
    created = _tables()
    assert {
        "users",
        "host_nodes",
        "node_api_keys",
        "node_status_events",
        "rentals",
        "port_allocations",
        "transactions",
        "idempotency_keys",
    } <= created
    assert {"role", "node_status", "rental_status", "transaction_type"} <= _enum_types()

    _alembic("downgrade", "base")
    assert _tables() == {"alembic_version"}
    assert _enum_types() == set()
    assert _query("SELECT count(*) FROM alembic_version") == [(0,)]

    _alembic("upgrade", "head")
    assert _tables() == created


def test_alembic_check_finds_no_drift_between_models_and_migrations(empty_database):
    _alembic("upgrade", "head")
    result = _alembic("check")
    assert "No new upgrade operations detected" in result.stdout + result.stderr
