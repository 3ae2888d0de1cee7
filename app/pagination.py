"""Cursor pagination: opaque, URL-safe cursors; a tampered cursor is a 422."""

from __future__ import annotations

import base64
import json
from typing import Any

from marshmallow import fields, validate

from app.errors import ValidationFailed
from app.validation import BaseSchema, Text

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class PageArgsSchema(BaseSchema):
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    cursor = Text(max_length=512, load_default=None)


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, types: tuple[type, ...]) -> list[Any] | None:
    """Decode a cursor made by :func:`encode_cursor`; its items must match `types`."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed(
            "The cursor is not valid.", errors={"cursor": ["Invalid cursor."]}
        ) from None
    if (
        not isinstance(values, list)
        or len(values) != len(types)
        or not all(isinstance(v, t) for v, t in zip(values, types, strict=True))
    ):
        raise ValidationFailed("The cursor is not valid.", errors={"cursor": ["Invalid cursor."]})
    return values


def newest_first_page(
    session: Any, query: Any, model: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of `query` ordered by (created_at, id) descending, keyset-paginated.

    `model` must have `created_at` and `id` columns; the cursor holds the last row's pair, so
    rows added meanwhile never shift a page.
    """
    import uuid
    from datetime import datetime

    from sqlalchemy import tuple_

    after = decode_cursor(cursor, (str, str))
    if after is not None:
        try:
            after_time, after_id = datetime.fromisoformat(after[0]), uuid.UUID(after[1])
        except ValueError:
            raise ValidationFailed(
                "The cursor is not valid.", errors={"cursor": ["Invalid cursor."]}
            ) from None
        query = query.where(tuple_(model.created_at, model.id) < tuple_(after_time, after_id))
    rows = list(
        session.execute(
            query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
        ).scalars()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)])
    return rows, next_cursor
