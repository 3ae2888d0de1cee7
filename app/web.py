"""Request-scoped database session and the after-commit enqueue helper."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.db import new_session

log = logging.getLogger(__name__)
_PENDING = "dc_pending_messages"


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
    pending = session.info.pop(_PENDING, [])
    for actor, args, kwargs in pending:
        try:
            actor.send(*args, **kwargs)
        except Exception:  # the rows are committed; a scheduled sweep repairs a lost send
            log.exception("enqueue after commit failed", extra={"actor": actor.actor_name})


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
