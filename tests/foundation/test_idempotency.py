"""Idempotency keys: the same key from the same user gives the first answer and does nothing twice."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from app.db import new_session
from app.errors import Conflict, ValidationFailed
from app.idempotency import IdempotencyKey, claim, record, validate_key
from tests.procs import wait_until

ENDPOINT = "POST /api/v1/things"


def _claim(user_id, key="key-1", payload=None, endpoint=ENDPOINT):
    session = new_session()
    try:
        result = claim(
            session,
            user_id=user_id,
            key=key,
            endpoint=endpoint,
            payload=payload if payload is not None else {"a": 1},
        )
        return session, result
    except BaseException:
        session.close()
        raise


def _finish(session, user_id, key="key-1", status=201, body=None):
    record(session, user_id=user_id, key=key, status_code=status, body=body or {"id": "first"})
    session.commit()
    session.close()


def test_the_first_request_holds_the_key_and_a_repeat_gets_the_stored_answer(user):
    session, result = _claim(user.id)
    assert result is None
    _finish(session, user.id, body={"id": "first", "amount": "1.0000"})

    session, result = _claim(user.id)
    session.close()
    assert result == (201, {"id": "first", "amount": "1.0000"})


def test_the_same_key_with_another_payload_or_endpoint_is_a_conflict(user):
    session, _ = _claim(user.id)
    _finish(session, user.id)
    with pytest.raises(Conflict):
        _claim(user.id, payload={"a": 2})
    with pytest.raises(Conflict):
        _claim(user.id, endpoint="POST /api/v1/other")


def test_a_key_whose_first_request_never_recorded_an_answer_is_in_progress(user):
    session, _ = _claim(user.id)
    session.commit()  # e.g. a crash between claim and record would roll back, but be explicit
    session.close()
    with pytest.raises(Conflict) as raised:
        _claim(user.id)
    assert "in progress" in raised.value.message


def test_keys_are_per_user(user, other_user):
    session, _ = _claim(user.id)
    _finish(session, user.id)
    session, result = _claim(other_user.id)
    assert result is None
    _finish(session, other_user.id, body={"id": "other"})


def test_a_rolled_back_request_frees_its_key(user, db):
    session, _ = _claim(user.id)
    session.rollback()
    session.close()
    assert db.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() == 0
    session, result = _claim(user.id)
    assert result is None
    session.close()


def test_a_concurrent_repeat_waits_for_the_first_and_then_returns_its_answer(user):
    first, result = _claim(user.id)
    assert result is None
    outcome: dict = {}

    def repeat():
        try:
            session, answer = _claim(user.id)
            session.close()
            outcome["answer"] = answer
        except Exception as exc:  # pragma: no cover (reported below)
            outcome["error"] = exc

    thread = threading.Thread(target=repeat)
    thread.start()
    watcher = new_session()
    try:
        # The repeat is blocked on the first transaction's key, not finished.
        wait_until(
            lambda: (
                watcher.execute(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                ).scalar_one()
                > 0
            ),
            timeout=10,
            what="the repeat to wait on the lock",
        )
        assert thread.is_alive()
    finally:
        watcher.close()
    _finish(first, user.id, body={"id": "first"})
    thread.join(10)
    assert outcome == {"answer": (201, {"id": "first"})}


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("abc", "abc"), (" abc ", "abc")])
def test_valid_keys_are_accepted(raw, expected):
    assert validate_key(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "x" * 256, "tab\tinside", "nul\x00"])
def test_invalid_keys_are_a_422(raw):
    with pytest.raises(ValidationFailed):
        validate_key(raw)
