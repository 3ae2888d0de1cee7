"""A user row is created on the first valid token, exactly once even when requests race."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from app.auth.models import User
from tests.auth.tokens import bearer, claims, dev_key, sign

CONCURRENT = 20


def test_concurrent_first_requests_create_exactly_one_user(app, settings, db):
    token = sign(claims(settings, "user_stampede", email="stampede@example.com"), dev_key(settings))
    start = threading.Barrier(CONCURRENT)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def first_request() -> None:
        client = app.test_client()  # one client per thread: test clients are not thread-safe
        start.wait()
        response = client.get("/api/v1/me", headers=bearer(token))
        with lock:
            results.append((response.status_code, (response.json or {}).get("id")))

    threads = [threading.Thread(target=first_request) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == CONCURRENT
    assert {status for status, _ in results} == {200}, results
    assert len({user_id for _, user_id in results}) == 1
    db.rollback()
    rows = db.execute(select(User).where(User.clerk_id == "user_stampede")).scalars().all()
    assert len(rows) == 1
    assert rows[0].email == "stampede@example.com"
    assert db.execute(select(func.count()).select_from(User)).scalar_one() == 1
