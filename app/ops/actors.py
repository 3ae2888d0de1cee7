"""Housekeeping actors."""

from __future__ import annotations

from app.queue.actors import actor
from app.redis_client import get_redis

PING_KEY = "dc:ping:{token}"


@actor(queue_name="system", max_retries=3, time_limit=10_000)
def ping(token: str) -> None:
    """Record that a worker ran (used by health checks and tests)."""
    get_redis().set(PING_KEY.format(token=token), "pong", ex=300)
