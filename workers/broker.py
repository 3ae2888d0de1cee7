"""The Dramatiq broker; imported before any actor so that actors bind to it."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from app.config import load_or_exit

settings = load_or_exit()

broker = RedisBroker(url=settings.redis_url, namespace="dramatiq")
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)

from workers.middleware import install as _install_middleware  # noqa: E402

_install_middleware(broker)
