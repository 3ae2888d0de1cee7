"""When each job last finished (the broker middleware records it) and was last sent (the scheduler)."""

from __future__ import annotations

from typing import Any

import redis

from app.queue.periodic import LAST_SENT_KEY
from app.queue.recorder import LAST_RUN_KEY


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
