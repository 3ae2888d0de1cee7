"""Request-scoped database session and the JSON body parser every route uses."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, g
from flask_smorest import Blueprint
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser

from app.db import new_session

log = logging.getLogger(__name__)


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
    if not isinstance(Blueprint.ARGUMENTS_PARSER, JsonBodyParser):
        Blueprint.ARGUMENTS_PARSER = JsonBodyParser()
