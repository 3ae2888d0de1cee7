"""Idempotency-Key support: the same key from the same user returns the first result."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import Response, jsonify, request
from marshmallow import Schema
from sqlalchemy import DateTime, ForeignKey, Integer, String, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.auth.current import current_user
from app.db import Base
from app.errors import Conflict, ValidationFailed
from app.web import db_session

F = TypeVar("F", bound=Callable[..., Any])


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(255), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


MAX_KEY_LENGTH = 255
# Printable ASCII, no leading or trailing space (surrounding whitespace is the header's own).
_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?", re.ASCII)


def validate_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip(" \t")
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValidationFailed(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters.",
            errors={"Idempotency-Key": ["Invalid value."]},
        )
    return key


def claim(
    session: Session, *, user_id: uuid.UUID, key: str, endpoint: str, payload: Any
) -> tuple[int, dict[str, Any]] | None:
    """Reserve `key` for this request inside the caller's transaction.

    Returns the stored (status, body) when the key was already used for the same request, None
    when this request holds the key now (the caller must :func:`record` its answer before commit).
    A concurrent request with the same key waits on the row lock and then sees the stored answer.
    """
    fp = fingerprint(payload)
    inserted = session.execute(
        insert(IdempotencyKey)
        .values(user_id=user_id, key=key, endpoint=endpoint, fingerprint=fp)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    ).first()
    if inserted is not None:
        return None
    row = session.execute(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .with_for_update()
    ).scalar_one()
    if row.endpoint != endpoint or row.fingerprint != fp:
        raise Conflict("This Idempotency-Key was already used for a different request.")
    if row.status_code is None or row.response is None:
        raise Conflict("A request with this Idempotency-Key is still in progress.")
    return row.status_code, row.response


def record(
    session: Session, *, user_id: uuid.UUID, key: str, status_code: int, body: dict[str, Any]
) -> None:
    row = session.get(IdempotencyKey, (user_id, key))
    assert row is not None
    row.status_code = status_code
    row.response = json.loads(json.dumps(body, default=str))


OPENAPI_HEADER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$",
    },
    "description": "The same key from the same user returns the first result.",
}


def replay(
    session: Session, *, user_id: uuid.UUID, endpoint: str, payload: Any
) -> tuple[str | None, Response | None]:
    """For a route that honours Idempotency-Key: (key, None) when this request goes ahead (it must
    :func:`record` its answer under `key` when one was sent), or (key, the first answer)."""
    key = validate_key(request.headers.get("Idempotency-Key"))
    if key is None:
        return None, None
    stored = claim(session, user_id=user_id, key=key, endpoint=endpoint, payload=payload)
    if stored is None:
        return key, None
    status, body = stored
    session.rollback()
    response = jsonify(body)
    response.status_code = status
    return key, response


def idempotent(endpoint: str, schema: type[Schema], status_code: int) -> Callable[[F], F]:
    """Honour Idempotency-Key on a route that creates or spends (place it below
    ``@blp.arguments``, whose data it fingerprints, and ``@blp.response``).

    The view changes rows and returns its data (or ``(data, status)``) without committing; this
    records the answer under the key and commits, in the view's transaction. A repeat of the
    request gets the first answer and the view does not run.
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            session = db_session()
            user_id = current_user().id
            key, replayed = replay(session, user_id=user_id, endpoint=endpoint, payload=data)
            if replayed is not None:
                return replayed
            result = view(self, data, *args, **kwargs)
            body, status = result if isinstance(result, tuple) else (result, status_code)
            if key is not None:
                record(
                    session,
                    user_id=user_id,
                    key=key,
                    status_code=status,
                    body=schema().dump(body),
                )
            session.commit()
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
