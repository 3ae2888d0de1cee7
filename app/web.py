"""Request-scoped database session and the after-commit enqueue helper."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, g
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction
from webargs.flaskparser import FlaskParser

from app.db import new_session

log = logging.getLogger(__name__)
PENDING_KEY = _PENDING = "dc_pending_messages"
_MARKS = "dc_pending_marks"  # savepoint -> how many messages were pending when it began


def db_session() -> Session:
    """The session of the current request, opened on first use and closed at teardown."""
    session = g.get("dc_db")
    if session is None:
        session = new_session()
        g.dc_db = session
    return session


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        session = g.pop("dc_db", None)
        if session is not None:
            if exc is not None or session.in_transaction():
                session.rollback()
            session.close()


def enqueue_after_commit(session: Session, actor: Any, *args: Any, **kwargs: Any) -> None:
    """Send `actor(*args, **kwargs)` once `session` commits; forget it if it rolls back.

    A message sent before commit could reach a worker that cannot see the rows yet, or describe
    a change that was rolled back.
    """
    session.info.setdefault(_PENDING, []).append((actor, args, kwargs))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # only a savepoint was released; the transaction itself is not committed yet
    pending = session.info.pop(_PENDING, [])
    for actor, args, kwargs in pending:
        try:
            actor.send(*args, **kwargs)
        except Exception:  # the rows are committed; a scheduled sweep repairs a lost send
            log.exception("enqueue after commit failed", extra={"actor": actor.actor_name})


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back savepoint forgets only what was enqueued inside it; the outer rollback, all."""
    if previous_transaction.nested:
        mark = session.info.get(_MARKS, {}).pop(previous_transaction, None)
        if mark is not None and _PENDING in session.info:
            del session.info[_PENDING][mark:]
    elif previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_marks(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_MARKS, None)


class JsonBodyParser(FlaskParser):
    """webargs' Flask parser, where any body that does not decode is a 400, never a 500.

    webargs turns only syntax errors into 400; `json.loads` also raises ValueError for integer
    literals beyond Python's digit limit and RecursionError for deeply nested arrays.
    """

    def _raw_load_json(self, req: Any) -> Any:
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as exc:
            raise json.JSONDecodeError(str(exc)[:100], doc="<body>", pos=0) from None


def install_request_parser() -> None:
    """Make every flask-smorest Blueprint parse with :class:`JsonBodyParser`.

    `@blp.arguments` binds the parser when a route module is imported, so this runs when the
    `app` package is imported, before any domain's routes.
    """
    from flask_smorest import Blueprint

    if not isinstance(Blueprint.ARGUMENTS_PARSER, JsonBodyParser):
        Blueprint.ARGUMENTS_PARSER = JsonBodyParser()
