"""Cursors are opaque; anything that was not made by the server is a 422."""

from __future__ import annotations

import base64
import json

import pytest

from app.errors import ValidationFailed
from app.pagination import PageArgsSchema, decode_cursor, encode_cursor


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_round_trips():
    cursor = encode_cursor(["2026-11-27T10:00:00+00:00", "8f0c..."])
    assert decode_cursor(cursor, (str, str)) == ["2026-11-27T10:00:00+00:00", "8f0c..."]
    assert decode_cursor(None, (str, str)) is None
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "not base64 at all",
        _b64(b"\xff\xfe"),
        _b64(b"{}"),
        _b64(b"[]"),
        _b64(b'["only one"]'),
        _b64(b"[1, 2]"),
        _b64(b'["a", "b", "c"]'),
        _b64(b"null"),
        _b64(json.dumps(["x", ["nested"]]).encode()),
    ],
)
def test_a_tampered_cursor_is_a_422(cursor):
    with pytest.raises(ValidationFailed) as raised:
        decode_cursor(cursor, (str, str))
    assert raised.value.status_code == 422
    assert raised.value.errors == {"cursor": ["Invalid cursor."]}


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ({}, True),
        ({"limit": "1"}, True),
        ({"limit": "200"}, True),
        ({"limit": "0"}, False),
        ({"limit": "201"}, False),
        ({"limit": "ten"}, False),
        ({"cursor": "x" * 513}, False),
        ({"other": "1"}, False),
    ],
)
def test_page_arguments_are_bounded(query, ok):
    errors = PageArgsSchema().validate(query)
    assert (not errors) == ok, errors
    if not query:
        assert PageArgsSchema().load({}) == {"limit": 50, "cursor": None}
