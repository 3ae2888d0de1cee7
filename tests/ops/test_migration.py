"""The ops migration goes down and up again on the test database."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import inspect

from app.db import get_engine
from tests.procs import ROOT


def _alembic(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        check=True,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
    )


def test_the_audit_table_comes_and_goes_with_its_revision():
    engine = get_engine()
    _alembic("downgrade", "0005")
    try:
        assert "ops_audit_events" not in inspect(engine).get_table_names()
    finally:
        _alembic("upgrade", "head")
    assert "ops_audit_events" in inspect(engine).get_table_names()
    indexes = {i["name"] for i in inspect(engine).get_indexes("ops_audit_events")}
    assert "ix_ops_audit_events_created_at" in indexes
