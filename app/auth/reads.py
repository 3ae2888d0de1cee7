"""Authentication's reads: a small pool of autocommit connections without a pre-ping.

Checking who calls (the user behind GET /me, the node key of an agent's handshake) reads a row
or three and changes nothing. Through the platform's engine each such read costs the pool's
pre-ping, `BEGIN` and the rollback or commit on top of its SELECTs: three round trips that the
database does nothing with. Here a connection runs each statement as it comes (autocommit),
and one found dead (the database restarted) is dropped with the rest of the pool and the read
tried once more on a fresh connection. Nothing read here is cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import get_engine, make_engine

# Connections per process, kept open; under a burst (a reconnect storm of agents) callers wait
# for one rather than open more: a connection opened for a moment and closed again costs the
# database a new backend each time.
POOL_SIZE = 16

T = TypeVar("T")
_NAMED = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class Prepared:
    """A statement to PREPARE once per connection and EXECUTE by name after that.

    `sql` is compiled for psycopg2 (`%(name)s` parameters, in the order `params` names them);
    a connection dropped by the pool takes its prepared statements with it. (Not for a
    transaction-pooling proxy such as PgBouncer's, which may run EXECUTE on another backend.)
    """

    name: str
    prepare: str
    execute: str

    @classmethod
    def of(cls, name: str, sql: str, params: tuple[str, ...]) -> Prepared:
        if "%%" in sql or set(_NAMED.findall(sql)) != set(params):
            raise ValueError(f"{name}: parameters must be exactly {params}, and no literal %")
        positional = _NAMED.sub(lambda m: f"${params.index(m.group(1)) + 1}", sql)
        holders = ", ".join(["%s"] * len(params))
        return cls(name, f"PREPARE {name} AS {positional}", f"EXECUTE {name} ({holders})")


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

    def fetch_prepared(self, statement: Prepared, *values: Any) -> tuple[Any, ...] | None:
        """One row of a statement prepared once per connection: each call then costs the
        database neither parsing nor planning (PostgreSQL keeps a generic plan for it)."""

        def execute(cursor: Any, info: dict[str, Any]) -> None:
            prepared: set[str] = info.setdefault("dc_prepared", set())
            if statement.name not in prepared:
                cursor.execute(statement.prepare)
                prepared.add(statement.name)
            cursor.execute(statement.execute, values)

        return self._fetch_one(execute)

    def _fetch_one(self, execute: Callable[[Any, dict[str, Any]], None]) -> tuple[Any, ...] | None:
        for attempt in (1, 2):
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                execute(cursor, conn.info)
                row = cursor.fetchone()
                cursor.close()
                return None if row is None else tuple(row)
            except psycopg2.errors.FeatureNotSupported:
                # "cached plan must not change result type": a migration changed a table under a
                # prepared statement. This connection (and its statements) goes; a fresh one
                # prepares them again.
                if attempt == 1:
                    conn.invalidate()
                    continue
                raise
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
