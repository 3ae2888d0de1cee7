"""One Redis connection pool per process."""

from __future__ import annotations

import redis

from app.config import get_settings

_clients: dict[str, redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    url = url or get_settings().redis_url
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            health_check_interval=30,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        _clients[url] = client
    return client
