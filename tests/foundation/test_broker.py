"""The broker: a real worker runs an actor; an actor sent after commit goes out only once the transaction commits."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.procs import running, wait_until, worker_process

QUEUE = "dramatiq:system"


@pytest.fixture
def redis():
    from app.redis_client import get_redis

    return get_redis()


@pytest.fixture
def ping():
    from app.ops.actors import ping as actor

    return actor


def test_a_real_worker_process_runs_the_ping_actor(redis, ping):
    token = uuid.uuid4().hex
    with running(worker_process()) as (worker,):
        ping.send(token)
        try:
            wait_until(
                lambda: redis.get(f"dc:ping:{token}") == "pong",
                timeout=30,
                what="the worker to run ping",
            )
        except TimeoutError:
            raise AssertionError(worker.tail()) from None
        assert worker.alive()
    assert redis.llen(QUEUE) == 0


def test_send_after_commit_sends_only_once_the_transaction_commits(redis, ping):
    from app.db import new_session

    session = new_session()
    try:
        session.execute(text("SELECT 1"))
        ping.send_after_commit(session, "after-commit")
        session.flush()
        assert redis.llen(QUEUE) == 0, "sent before commit"
        session.commit()
        assert redis.llen(QUEUE) == 1
        message_ids = redis.lrange(QUEUE, 0, -1)
        assert "after-commit" in redis.hget(f"{QUEUE}.msgs", message_ids[0])
    finally:
        session.close()


def test_send_after_commit_sends_nothing_after_a_rollback(redis, ping):
    from app.db import new_session

    session = new_session()
    try:
        session.execute(text("SELECT 1"))
        ping.send_after_commit(session, "rolled-back")
        session.rollback()
        assert redis.llen(QUEUE) == 0
        # A later commit in the same session must not resurrect the forgotten message.
        session.execute(text("SELECT 1"))
        session.commit()
        assert redis.llen(QUEUE) == 0
    finally:
        session.close()


def test_a_released_savepoint_does_not_send_before_the_transaction_commits(redis, ping):
    from app.db import new_session

    session = new_session()
    try:
        session.execute(text("SELECT 1"))
        ping.send_after_commit(session, "outer")
        with session.begin_nested():
            ping.send_after_commit(session, "inside")
        assert redis.llen(QUEUE) == 0, "a savepoint release is not a commit"
        session.commit()
        assert redis.llen(QUEUE) == 2
    finally:
        session.close()


def test_a_rolled_back_savepoint_forgets_only_what_was_enqueued_inside_it(redis, ping):
    from app.db import new_session

    session = new_session()
    try:
        session.execute(text("SELECT 1"))
        ping.send_after_commit(session, "kept-before")
        try:
            with session.begin_nested():
                ping.send_after_commit(session, "dropped-inside")
                raise RuntimeError("the savepoint fails")
        except RuntimeError:
            pass
        savepoint = session.begin_nested()
        ping.send_after_commit(session, "dropped-too")
        savepoint.rollback()
        ping.send_after_commit(session, "kept-after")
        session.commit()
        bodies = [
            redis.hget(f"{QUEUE}.msgs", message_id) for message_id in redis.lrange(QUEUE, 0, -1)
        ]
        assert len(bodies) == 2
        assert "kept-before" in bodies[0] and "kept-after" in bodies[1]
    finally:
        session.close()
