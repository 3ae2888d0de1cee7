"""The Dramatiq broker; every actor binds to it, in the API and the worker processes alike."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from app.config import load_or_exit
from app.queue.middleware import install

# Tests that kill a worker lower these so its unacked messages come back in seconds, not minutes.
_OPTIONS_FROM_ENV = (
    ("heartbeat_timeout", "DC_BROKER_HEARTBEAT_TIMEOUT_MS"),
    ("maintenance_chance", "DC_BROKER_MAINTENANCE_CHANCE"),
)


def _make_broker() -> RedisBroker:
    settings = load_or_exit()
    options = {name: int(os.environ[var]) for name, var in _OPTIONS_FROM_ENV if os.environ.get(var)}
    made = RedisBroker(url=settings.redis_url, namespace="dramatiq", **options)
    made.add_middleware(CurrentMessage())
    install(made)
    return made


broker = _make_broker()
dramatiq.set_broker(broker)
