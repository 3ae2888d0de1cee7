"""Authentication's reads: a small pool of autocommit connections without a pre-ping.

Checking who calls (the user behind GET /me, the node key of an agent's handshake) reads a row
or three and changes nothing. Through the platform's engine each such read costs the pool's
pre-ping, `BEGIN` and the rollback or commit on top of its SELECTs: three round trips that the
database does nothing with. Here a connection runs each statement as it comes (autocommit),
and one found dead (the database restarted) is dropped with the rest of the pool and the read
tried once more on a fresh connection. Nothing read here is cached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import get_engine, make_engine

# Connections per process, kept open; under a burst (a reconnect storm of agents) callers wait
# for one rather than open more: a connection opened for a moment and closed again costs the
# database a new backend each time.
POOL_SIZE = 16

T = TypeVar("T")


class ReadPool:
    def __init__(self, url: str):
        self.engine = make_engine(
            url,
            pool_pre_ping=False,
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,  # autocommit: no transaction to end
            pool_size=POOL_SIZE,
            max_overflow=0,
        )

    def fetch_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One row of `sql` (already compiled for psycopg2), straight on a pooled connection."""
        for attempt in (1, 2):
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute(sql, params)
                row = cursor.fetchone()
                cursor.close()
                return None if row is None else tuple(row)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if attempt == 1 and (conn.dbapi_connection is None or conn.dbapi_connection.closed):
                    conn.invalidate()
                    self.engine.dispose()
                    continue
                raise
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def run(self, work: Callable[[Session], T]) -> T:
        """`work(session)` on an ORM session over this pool (for reads only: it never commits)."""
        for attempt in (1, 2):
            try:
                with Session(self.engine) as session:
                    return work(session)
            except DBAPIError as exc:
                # SQLAlchemy has invalidated the pool's connections; a fresh one answers.
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise
        raise AssertionError("unreachable")


_pool: ReadPool | None = None
_pool_for: Engine | None = None


def read_pool() -> ReadPool:
    """This process's pool, on the database of the platform's engine (made again if that
    engine is replaced)."""
    global _pool, _pool_for
    engine = get_engine()
    if _pool is None or _pool_for is not engine:
        if _pool is not None:
            _pool.engine.dispose()
        _pool, _pool_for = ReadPool(engine.url.render_as_string(hide_password=False)), engine
    return _pool
