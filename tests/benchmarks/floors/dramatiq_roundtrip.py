"""The rental latency floor: one Dramatiq message, sent and run, on the platform's broker settings.

The same Redis broker (URL, namespace) and the same worker options as the benchmark's workers
(one process, the same threads, the same `dramatiq_worker_timeout`), with one actor that only
notes in Redis when it ran. tests/benchmarks/rental_latency.py divides its POST -> agent figure by
this round trip.

    dramatiq tests.benchmarks.floors.dramatiq_roundtrip --processes 1 --threads 8
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench_floor"
broker = RedisBroker(url=os.environ["REDIS_URL"], namespace="dramatiq")
dramatiq.set_broker(broker)
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def touch(key: str) -> None:
    """Note when this message ran (epoch seconds) under `key`."""
    _redis.set(key, repr(time.time()), ex=600)
