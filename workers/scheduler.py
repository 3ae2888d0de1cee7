"""The scheduler process: sends each domain's periodic jobs; only one instance sends at a time.

Run it as `dc-scheduler` or `python -m workers.scheduler`. Jobs are idempotent and catch up by
themselves (watermarks), so a missed or doubled send neither skips nor repeats work.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import redis

from app.config import Settings, load_or_exit
from app.logging import configure_logging, redact_in_logs
from app.queue.periodic import LAST_SENT_KEY, PeriodicJob

log = logging.getLogger("workers.scheduler")
LOCK_KEY = "dc:scheduler:leader"


class Scheduler:
    def __init__(self, jobs: list[PeriodicJob], settings: Settings, redis: redis.Redis):
        self.jobs = jobs
        self.settings = settings
        self.redis = redis
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.next_due = {actor.actor_name: 0.0 for actor, _ in jobs}

    def is_leader(self) -> bool:
        """Hold a short Redis lease; another scheduler takes over if this one dies."""
        if self.redis.set(LOCK_KEY, self.identity, nx=True, ex=15):
            return True
        if self.redis.get(LOCK_KEY) == self.identity:
            self.redis.expire(LOCK_KEY, 15)
            return True
        return False

    def tick(self) -> None:
        if not self.is_leader():
            return
        now = time.monotonic()
        for actor, seconds in self.jobs:
            if now >= self.next_due[actor.actor_name]:
                self.next_due[actor.actor_name] = now + seconds(self.settings)
                actor.send()
                self.redis.hset(LAST_SENT_KEY, actor.actor_name, f"{time.time():.3f}")
                log.info("periodic job sent", extra={"actor": actor.actor_name})

    def run(self) -> None:
        log.info("scheduler started", extra={"jobs": [a.actor_name for a, _ in self.jobs]})
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            self.stop.wait(1.0)
        if self.redis.get(LOCK_KEY) == self.identity:
            self.redis.delete(LOCK_KEY)


def main() -> None:
    settings = load_or_exit()
    configure_logging(settings.log_level)
    redact_in_logs(settings.frps_plugin_secret, settings.frps_token)
    # Entry point: the actors are imported only once the settings are known to be valid.
    from app.actors import periodic_jobs
    from app.redis_client import get_redis

    scheduler = Scheduler(periodic_jobs(), settings, get_redis())
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop.set())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop.set())
    scheduler.run()


if __name__ == "__main__":
    main()
