"""Declarative base, engine and session factory, and the after-commit hooks of a session.

Usable without a Flask app context: routes, actors and scripts share it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    SessionTransaction,
    mapped_column,
    sessionmaker,
)

from app.config import get_settings

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def updated_at_column() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def make_engine(url: str, **kwargs: Any) -> Engine:
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 10,
        "max_overflow": 20,
        "future": True,
    }
    options.update(kwargs)
    return create_engine(url, **options)


def configure(url: str, **kwargs: Any) -> Engine:
    """Create the process-wide engine (idempotent for the same URL)."""
    global _engine, _factory
    if _engine is not None and str(_engine.url.render_as_string(hide_password=False)) == url:
        return _engine
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url, **kwargs)
    _factory = sessionmaker(bind=_engine, expire_on_commit=False)
    return _engine


def get_engine() -> Engine:
    if _engine is None:
        configure(get_settings().database_url)
    assert _engine is not None
    return _engine


def new_session() -> Session:
    get_engine()
    assert _factory is not None
    return _factory()


@contextmanager
def session_scope(*, raise_hook_errors: bool = False) -> Iterator[Session]:
    """A unit of work for workers and scripts: commit on success, roll back on error.

    With `raise_hook_errors`, an after-commit hook that fails (a send to Redis, say) makes the
    commit raise once every hook has run: an actor then fails and Dramatiq retries it, and the
    repeat finds the rows committed and sends again.
    """
    session = new_session()
    if raise_hook_errors:
        session.info[_RAISE] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ------------------------------------------------------------------------------ after commit
_HOOKS = "dc_after_commit"  # session.info: [(name, hook)] waiting for the commit
_MARKS = "dc_after_commit_marks"  # savepoint -> how many hooks were waiting when it began
_RAISE = "dc_after_commit_raise"  # set by session_scope(raise_hook_errors=True)


def after_commit(
    session: Session, hook: Callable[[], object], *, name: str, once: bool = False
) -> None:
    """Run `hook()` once `session`'s transaction commits; forget it if the transaction rolls back.

    A message sent before commit could reach a worker that cannot see the rows yet, or describe
    a change that was rolled back. A savepoint that rolls back forgets only the hooks added
    inside it; releasing a savepoint runs nothing. With `once`, a hook of the same `name`
    already waiting in this transaction is not added again. A failing hook is logged, never
    raised (except in a ``session_scope(raise_hook_errors=True)``): the rows are committed, and
    the periodic sweeps repair a lost send.
    """
    pending: list[tuple[str, Callable[[], object]]] = session.info.setdefault(_HOOKS, [])
    if once and any(waiting == name for waiting, _ in pending):
        return
    pending.append((name, hook))


@event.listens_for(Session, "after_commit")
def _run_hooks(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # only a savepoint was released; the transaction itself is not committed yet
    failures: list[Exception] = []
    for name, hook in session.info.pop(_HOOKS, []):
        try:
            hook()
        except Exception as exc:
            log.exception("after-commit hook failed", extra={"hook": name})
            failures.append(exc)
    if failures and session.info.get(_RAISE):
        raise failures[0]


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[transaction] = len(session.info.get(_HOOKS, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_hooks(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back savepoint forgets only what was added inside it; the outer rollback, all."""
    if previous_transaction.nested:
        mark = session.info.get(_MARKS, {}).pop(previous_transaction, None)
        if mark is not None and _HOOKS in session.info:
            del session.info[_HOOKS][mark:]
    elif previous_transaction.parent is None:
        session.info.pop(_HOOKS, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_marks(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_MARKS, None)
