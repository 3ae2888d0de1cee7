"""Worker middleware that feeds the ops page and /metrics through Redis.

Per actor run it counts the outcome and the duration (one pipelined Redis call), records the
last successful run of every actor (the periodic jobs' "last run"), and keeps the error of a
message that goes to the dead-letter queue (Dramatiq stores the message as it was enqueued, so
the final traceback would otherwise be lost). Each worker process registers itself so the page
can tell workers from producers. Messages sent while a correlation id is set carry it along.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from app.logging import correlation_id
from app.redis_client import get_redis

log = logging.getLogger(__name__)

# The key families this middleware writes; the ops page and /metrics read them (app/ops/).
ACTOR_STATS_KEY = "dc:metrics:actors"
LAST_RUN_KEY = "dc:jobs:last_run"  # field: actor name, value: epoch seconds of its last success
WORKERS_KEY = "dc:ops:workers"  # field: broker id, value: JSON about the worker process
DEAD_NOTE_TTL_S = 7 * 24 * 3600  # as long as Dramatiq keeps dead letters
# Upper bounds in seconds of the actor-duration histogram (the last bucket is +Inf).
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
)


def bucket_index(seconds: float) -> int:
    for index, bound in enumerate(DURATION_BUCKETS):
        if seconds <= bound:
            return index
    return len(DURATION_BUCKETS)


def dead_note_key(redis_message_id: str) -> str:
    """The error kept beside a dead letter (Dramatiq keeps the message only as enqueued)."""
    return f"dc:ops:dead:{redis_message_id}"


class OpsRecorder(Middleware):
    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._errors: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        cid = correlation_id.get()
        if cid and "correlation_id" not in message.options:
            message.options["correlation_id"] = cid

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
            "queues": _consumed_queues(broker, worker),
            "threads": getattr(worker, "worker_threads", None),
        }
        try:
            get_redis().hset(WORKERS_KEY, broker.broker_id, json.dumps(info))  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not register the worker for the ops page", exc_info=True)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            get_redis().hdel(WORKERS_KEY, broker.broker_id)  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not unregister the worker", exc_info=True)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        # Whether a failed message is retried or dead-lettered is only known at ack/nack time
        # (Retries decides after this hook runs), so keep its error until then.
        if exception is not None:
            error = f"{type(exception).__name__}: {exception}"[:2000]
            trace = "".join(traceback.format_exception(exception, limit=30))
            with self._lock:
                self._errors[message.message_id] = (error, trace)
        self._record(message, "ok" if exception is None else "error")

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._record(message, "skipped")

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._errors.pop(message.message_id, None)

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        """Keep the error beside the dead letter before it appears in the dead-letter queue."""
        with self._lock:
            error, trace = self._errors.pop(
                message.message_id, ("skipped and failed (e.g. too old for its age limit)", None)
            )
        actor, queue = message.actor_name, _canonical(message.queue_name)
        redis_id = message.options.get("redis_message_id")
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.hincrby(ACTOR_STATS_KEY, f"d|{actor}|{queue}", 1)
            if redis_id:
                pipe.set(
                    dead_note_key(redis_id),
                    json.dumps({"error": error, "traceback": trace, "at": time.time()}),
                    ex=DEAD_NOTE_TTL_S,
                )
            pipe.execute()
        except Exception:
            log.warning("could not record the dead letter's error", exc_info=True)

    def _record(self, message: Any, outcome: str) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        actor, queue = message.actor_name, _canonical(message.queue_name)
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.hincrby(ACTOR_STATS_KEY, f"n|{actor}|{queue}|{outcome}", 1)
            if started is not None:
                elapsed = time.perf_counter() - started
                pipe.hincrbyfloat(ACTOR_STATS_KEY, f"s|{actor}|{queue}", round(elapsed, 6))
                pipe.hincrby(ACTOR_STATS_KEY, f"b|{actor}|{queue}|{bucket_index(elapsed)}", 1)
            if outcome == "ok":
                pipe.hset(LAST_RUN_KEY, actor, f"{time.time():.3f}")
            pipe.execute()
        except Exception:  # metrics must never fail the message
            log.warning("could not record the actor run", exc_info=True)


def _consumed_queues(broker: dramatiq.Broker, worker: Any) -> list[str]:
    consumed = [q for q in getattr(worker, "consumers", {}) if not q.endswith(".DQ")]
    whitelist = getattr(worker, "consumer_whitelist", None)
    return sorted(consumed or whitelist or broker.get_declared_queues())


def _canonical(queue_name: str) -> str:
    return queue_name[:-3] if queue_name.endswith(".DQ") else queue_name
