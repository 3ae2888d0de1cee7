"""The calling user's row, read for a request that only shows it: one SELECT, nothing else.

Read through the request's ORM session, one row costs four round trips (the pool's pre-ping,
`BEGIN`, the `SELECT`, `COMMIT`) and a few hundred microseconds of ORM and Core work. A read that
changes nothing needs none of it: this one runs its statement, compiled once, straight on a
connection of the read pool (app/auth/reads.py). The row is read on every request, never
cached, so a change to it shows at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import Label

from app.auth.models import User
from app.auth.reads import Prepared, read_pool
from app.enums import Role


@dataclass(frozen=True, slots=True)
class Account:
    """A user as a read-only route shows it (not attached to any session)."""

    id: uuid.UUID
    clerk_id: str
    email: str | None
    role: Role
    balance: Decimal  # posted (app/billing/accrued.py derives what the user sees)
    created_at: datetime
    # Whether the user has an active rental, whose running cost the balance shown must take off
    # (True when not known).
    renting: bool = True

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(user.id, user.clerk_id, user.email, user.role, user.balance, user.created_at)


# (SQL text: auth does not import the rentals domain.)
_RENTING: Label[bool] = literal_column(
    "EXISTS (SELECT 1 FROM rentals r WHERE r.renter_id = users.id AND r.status = 'active')"
).label("renting")
_COLUMNS = (
    User.id,
    User.clerk_id,
    User.email,
    User.role,
    User.balance,
    User.created_at,
    _RENTING,
)
_PSYCOPG2 = postgresql.psycopg2.dialect()
_BY_CLERK_ID = Prepared.of(
    "dc_account_by_clerk_id",
    str(select(*_COLUMNS).where(User.clerk_id == bindparam("clerk_id")).compile(dialect=_PSYCOPG2)),
    ("clerk_id",),
)
_BY_ID = Prepared.of(
    "dc_account_by_id",
    str(select(*_COLUMNS).where(User.id == bindparam("user_id")).compile(dialect=_PSYCOPG2)),
    ("user_id",),
)


def _account(row: tuple | None) -> Account | None:
    if row is None:
        return None
    user_id, clerk_id, email, role, balance, created_at, renting = row
    return Account(
        user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(user_id),
        clerk_id,
        email,
        Role(role),
        balance,
        created_at,
        bool(renting),
    )


def account_by_clerk_id(clerk_id: str) -> Account | None:
    return _account(read_pool().fetch_prepared(_BY_CLERK_ID, clerk_id))


def account_by_id(user_id: uuid.UUID) -> Account | None:
    return _account(read_pool().fetch_prepared(_BY_ID, str(user_id)))
