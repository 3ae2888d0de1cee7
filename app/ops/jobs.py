"""When each job last finished: a Redis hash that the ops page and /metrics read."""

from __future__ import annotations

import time
from typing import Any

import redis

from app.redis_client import get_redis

LAST_RUN_KEY = "dc:jobs:last_run"  # field: job (actor) name, value: epoch seconds
LAST_SENT_KEY = "dc:scheduler:last_sent"  # written by workers/scheduler.py


def record_job_run(name: str, *, client: redis.Redis | Any = None, at: float | None = None) -> None:
    """Record that job `name` just finished (the worker middleware does this for every actor)."""
    (client or get_redis()).hset(LAST_RUN_KEY, name, f"{at if at is not None else time.time():.3f}")


def job_runs(client: redis.Redis) -> dict[str, float]:
    return _floats(client.hgetall(LAST_RUN_KEY))


def job_sends(client: redis.Redis) -> dict[str, float]:
    return _floats(client.hgetall(LAST_SENT_KEY))


def _floats(raw: Any) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        try:
            out[key.decode() if isinstance(key, bytes) else key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
