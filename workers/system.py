"""Housekeeping actors."""

from __future__ import annotations

import dramatiq

from app.redis_client import get_redis


@dramatiq.actor(queue_name="system", max_retries=3, time_limit=10_000)
def ping(token: str) -> None:
    """Record that a worker ran (used by health checks and tests)."""
    get_redis().set(f"dc:ping:{token}", "pong", ex=300)
