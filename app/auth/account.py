"""The calling user's row, read for a request that only shows it: one SELECT, nothing else.

Read through the request's ORM session, one row costs four round trips (the pool's pre-ping,
`BEGIN`, the `SELECT`, `COMMIT`) and a few hundred microseconds of ORM and Core work. A read that
changes nothing needs none of it: this one runs the statement, compiled once, straight on a
connection of a small autocommit pool without a pre-ping (a connection found dead is dropped and
the SELECT tried once more on a fresh one). The row is read on every request, never cached, so a
change to it shows at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg2
from sqlalchemy import Engine, bindparam, select

from app.auth.models import User
from app.db import get_engine, make_engine
from app.enums import Role

POOL_SIZE = 5  # connections kept open per process; up to POOL_OVERFLOW more under a burst
POOL_OVERFLOW = 45


@dataclass(frozen=True, slots=True)
class Account:
    """A user as a read-only route shows it (not attached to any session)."""

    id: uuid.UUID
    clerk_id: str
    email: str | None
    role: Role
    balance: Decimal
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(user.id, user.clerk_id, user.email, user.role, user.balance, user.created_at)


_COLUMNS = (User.id, User.clerk_id, User.email, User.role, User.balance, User.created_at)
_BY_CLERK_ID = select(*_COLUMNS).where(User.clerk_id == bindparam("clerk_id"))
_BY_ID = select(*_COLUMNS).where(User.id == bindparam("user_id"))


class _Reads:
    """This process's autocommit pool and the two statements, compiled for its dialect."""

    def __init__(self, engine: Engine):
        self.url = engine.url
        self.engine = make_engine(
            engine.url.render_as_string(hide_password=False),
            pool_pre_ping=False,
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,  # autocommit: no transaction to end
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        self.by_clerk_id = str(_BY_CLERK_ID.compile(dialect=self.engine.dialect))
        self.by_id = str(_BY_ID.compile(dialect=self.engine.dialect))

    def fetch(self, sql: str, params: dict[str, Any]) -> Account | None:
        for attempt in (1, 2):
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute(sql, params)
                row = cursor.fetchone()
                cursor.close()
                break
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                # A connection that died means the database restarted, and every other pooled
                # one died with it: drop them all, and try once more on a fresh connection.
                if conn.dbapi_connection is None or conn.dbapi_connection.closed:
                    conn.invalidate()
                    self.engine.dispose()
                    if attempt == 1:
                        continue
                raise
            finally:
                conn.close()
        if row is None:
            return None
        user_id, clerk_id, email, role, balance, created_at = row
        return Account(
            user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(user_id),
            clerk_id,
            email,
            Role(role),
            balance,
            created_at,
        )


_reads: _Reads | None = None


def _pool() -> _Reads:
    global _reads
    engine = get_engine()
    if _reads is None or _reads.url != engine.url:
        if _reads is not None:
            _reads.engine.dispose()
        _reads = _Reads(engine)
    return _reads


def account_by_clerk_id(clerk_id: str) -> Account | None:
    reads = _pool()
    return reads.fetch(reads.by_clerk_id, {"clerk_id": clerk_id})


def account_by_id(user_id: uuid.UUID) -> Account | None:
    reads = _pool()
    return reads.fetch(reads.by_id, {"user_id": str(user_id)})
