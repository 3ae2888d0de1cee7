"""Databases for tests and benchmarks: dropped, created, and built by running the migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_execute(name: str, *statements: str) -> None:
    """Run statements on the server after closing every other connection to database `name`."""
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        for statement in statements:
            cur.execute(statement)
    conn.close()


def recreate_database(name: str, *, env: dict[str, str] | None = None) -> None:
    """Drop and create database `name`, then run the migrations (DATABASE_URL from `env`)."""
    admin_execute(name, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
    )
