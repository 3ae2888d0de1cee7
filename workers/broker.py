"""The Dramatiq broker; imported before any actor so that actors bind to it."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from app.config import load_or_exit

settings = load_or_exit()

# Tests that kill a worker lower these so its unacked messages come back in seconds, not minutes.
_broker_options = {
    name: int(os.environ[var])
    for name, var in (
        ("heartbeat_timeout", "DC_BROKER_HEARTBEAT_TIMEOUT_MS"),
        ("maintenance_chance", "DC_BROKER_MAINTENANCE_CHANCE"),
    )
    if os.environ.get(var)
}
broker = RedisBroker(url=settings.redis_url, namespace="dramatiq", **_broker_options)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)

from workers.middleware import install as _install_middleware  # noqa: E402

_install_middleware(broker)
