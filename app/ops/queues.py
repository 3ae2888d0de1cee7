"""Inspect and repair Dramatiq's Redis broker data: queue counts, workers, dead letters.

The layout is Dramatiq's own (see dramatiq/brokers/redis/dispatch.lua), under the namespace:

- ``<ns>:<queue>``: list of ready message ids; ``<ns>:<queue>.msgs``: hash id -> message data for
  ready *and* fetched-but-unacked messages.
- ``<ns>:<queue>.DQ`` / ``.DQ.msgs``: the delay queue (retries with backoff, ``delay=`` sends).
- ``<ns>:<queue>.XQ``: dead letters, a sorted set id -> dead-lettered at (ms); ``.XQ.msgs`` their data.
- ``<ns>:__acks__.<broker id>.<queue>``: the ids a worker process has fetched and not acked yet.
- ``<ns>:__heartbeats__``: sorted set broker id -> last command (ms). Every process that talks
  to the broker appears there, producers (API, scheduler) included.

The ids in these keys are the broker's ``redis_message_id`` (one per enqueue), not Dramatiq's
``message_id`` (stable across retries).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from app.queue.broker import broker
from app.queue.recorder import WORKERS_KEY, dead_note_key

NAMESPACE = "dramatiq"
PLATFORM_QUEUES = ("system", "fleet", "rentals", "billing", "pricing", "webhooks")
HEARTBEAT_TIMEOUT_MS = 60_000  # RedisBroker's default heartbeat_timeout
_SUFFIXES = (".DQ.msgs", ".XQ.msgs", ".msgs", ".DQ", ".XQ")

# Move one dead letter back onto its queue, or drop it; only the caller that removes the id from
# the dead-letter set acts, so two admins clicking at once cannot enqueue it twice.
_REQUEUE_LUA = """
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
if ARGV[3] == '' then return -1 end
redis.call('hset', KEYS[4], ARGV[2], ARGV[3])
redis.call('rpush', KEYS[3], ARGV[2])
return 1
"""
_DISCARD_LUA = """
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class QueueStats:
    name: str
    ready: int
    delayed: int
    in_flight: int
    dead: int


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    role: str  # "worker" (registered by the ops middleware at boot) or "producer"
    last_heartbeat: float  # epoch seconds
    alive: bool
    host: str | None = None
    pid: int | None = None
    queues: list[str] = field(default_factory=list)
    threads: int | None = None
    started_at: float | None = None
    in_flight: int = 0


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    id: str
    message_id: str | None
    actor: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    error: str | None
    traceback: str | None
    failed_at: float  # epoch seconds
    enqueued_at: float | None
    retries: int
    correlation_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def platform_queues() -> tuple[str, ...]:
    """The platform's queues and every queue an imported actor declared on our broker."""
    return tuple(sorted(set(PLATFORM_QUEUES) | broker.get_declared_queues()))


class QueueInspector:
    """Read and repair one Dramatiq namespace; every method is a few pipelined Redis calls."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = NAMESPACE,
        known_queues: Iterable[str] = PLATFORM_QUEUES,
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
    ):
        self.redis = client
        self.ns = namespace
        self.known_queues = tuple(known_queues)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._requeue = client.register_script(_REQUEUE_LUA)
        self._discard = client.register_script(_DISCARD_LUA)

    def _key(self, *parts: str) -> str:
        return f"{self.ns}:" + "".join(parts)

    # -- reading -------------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        """The platform's queues plus every queue that has data in Redis."""
        names = set(self.known_queues)
        prefix = f"{self.ns}:"
        for key in self.redis.scan_iter(match=f"{prefix}*", count=1000):
            key = _text(key)[len(prefix) :]
            if key.startswith("__"):
                continue
            for suffix in _SUFFIXES:
                if key.endswith(suffix):
                    key = key[: -len(suffix)]
                    break
            if key:
                names.add(key)
        return sorted(names)

    def _heartbeats(self) -> list[tuple[str, float]]:
        entries = cast(
            list[Any], self.redis.zrange(self._key("__heartbeats__"), 0, -1, withscores=True)
        )
        return [(_text(member), float(score)) for member, score in entries]

    def stats(self, queues: Iterable[str] | None = None) -> list[QueueStats]:
        names = list(queues) if queues is not None else self.queue_names()
        brokers = [broker_id for broker_id, _ in self._heartbeats()]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(self._key(name))
            pipe.hlen(self._key(name, ".DQ.msgs"))
            pipe.zcard(self._key(name, ".XQ"))
            for broker_id in brokers:
                pipe.scard(self._key("__acks__.", broker_id, ".", name))
        results = iter(pipe.execute())
        out = []
        for name in names:
            ready, delayed, dead = next(results), next(results), next(results)
            in_flight = sum(next(results) for _ in brokers)
            out.append(
                QueueStats(name=name, ready=ready, delayed=delayed, in_flight=in_flight, dead=dead)
            )
        return out

    def workers(self, queues: Iterable[str] | None = None) -> list[WorkerInfo]:
        """Every broker process seen, newest heartbeat first; registered workers are named."""
        now_ms = time.time() * 1000
        beats = self._heartbeats()
        registry = {_text(k): v for k, v in self.redis.hgetall(WORKERS_KEY).items()}
        names = list(queues) if queues is not None else self.queue_names()
        pipe = self.redis.pipeline(transaction=False)
        for broker_id, _ in beats:
            for name in names:
                pipe.scard(self._key("__acks__.", broker_id, ".", name))
        counts = iter(pipe.execute())
        out = []
        seen = set()
        for broker_id, score in beats:
            seen.add(broker_id)
            in_flight = sum(next(counts) for _ in names)
            info = _loads(registry.get(broker_id)) or {}
            out.append(
                WorkerInfo(
                    id=broker_id,
                    role="worker" if info else "producer",
                    last_heartbeat=score / 1000,
                    alive=now_ms - score < self.heartbeat_timeout_ms,
                    host=info.get("host"),
                    pid=info.get("pid"),
                    queues=info.get("queues") or [],
                    threads=info.get("threads"),
                    started_at=info.get("started_at"),
                    in_flight=in_flight,
                )
            )
        # A worker that booted but has not polled yet, or whose heartbeat Dramatiq dropped.
        stale = []
        for broker_id, raw in registry.items():
            if broker_id in seen:
                continue
            info = _loads(raw) or {}
            started = float(info.get("started_at") or 0)
            if now_ms / 1000 - started > 24 * 3600:
                stale.append(broker_id)
                continue
            out.append(
                WorkerInfo(
                    id=broker_id,
                    role="worker",
                    last_heartbeat=started,
                    alive=False,
                    host=info.get("host"),
                    pid=info.get("pid"),
                    queues=info.get("queues") or [],
                    threads=info.get("threads"),
                    started_at=info.get("started_at"),
                )
            )
        if stale:
            self.redis.hdel(WORKERS_KEY, *stale)
        out.sort(key=lambda w: (w.role != "worker", -w.last_heartbeat))
        return out

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The queue's dead letters, most recently failed first."""
        entries: list[Any] = self.redis.zrevrange(  # type: ignore[assignment]
            self._key(queue, ".XQ"), 0, max(limit, 1) - 1, withscores=True
        )
        if not entries:
            return []
        ids = [_text(member) for member, _ in entries]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self._key(queue, ".XQ.msgs"), ids)
        pipe.mget([dead_note_key(i) for i in ids])
        datas, notes = pipe.execute()
        return [
            _dead_letter(queue, redis_id, float(score), data, note)
            for (_, score), redis_id, data, note in zip(entries, ids, datas, notes, strict=True)
        ]

    def all_dead_letters(
        self, queues: Iterable[str] | None = None, *, limit: int = 100
    ) -> list[DeadLetter]:
        names = list(queues) if queues is not None else self.queue_names()
        letters = [d for name in names for d in self.dead_letters(name, limit=limit)]
        letters.sort(key=lambda d: d.failed_at, reverse=True)
        return letters[:limit]

    def dead_letter(self, queue: str, redis_message_id: str) -> DeadLetter | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(self._key(queue, ".XQ"), redis_message_id)
        pipe.hget(self._key(queue, ".XQ.msgs"), redis_message_id)
        pipe.get(dead_note_key(redis_message_id))
        score, data, note = pipe.execute()
        if score is None:
            return None
        return _dead_letter(queue, redis_message_id, float(score), data, note)

    # -- repairing -----------------------------------------------------------------------------

    def requeue(self, queue: str, redis_message_id: str) -> bool:
        """Put one dead letter back at the end of its queue with fresh retries; False if gone."""
        data = self.redis.hget(self._key(queue, ".XQ.msgs"), redis_message_id)
        new_id = str(uuid.uuid4())
        payload = _fresh_message(data, queue, new_id) if data is not None else ""
        keys = [
            self._key(queue, ".XQ"),
            self._key(queue, ".XQ.msgs"),
            self._key(queue),
            self._key(queue, ".msgs"),
        ]
        done = int(self._requeue(keys=keys, args=[redis_message_id, new_id, payload]))
        if done:
            self.redis.delete(dead_note_key(redis_message_id))
        return done == 1

    def discard(self, queue: str, redis_message_id: str) -> bool:
        """Delete one dead letter for good; False if it was already gone."""
        done = int(
            self._discard(
                keys=[self._key(queue, ".XQ"), self._key(queue, ".XQ.msgs")],
                args=[redis_message_id],
            )
        )
        if done:
            self.redis.delete(dead_note_key(redis_message_id))
        return done == 1

    def requeue_all(self, queue: str) -> int:
        return self._each_dead(queue, self.requeue)

    def discard_all(self, queue: str) -> int:
        return self._each_dead(queue, self.discard)

    def _each_dead(self, queue: str, action: Any) -> int:
        # Dead letters that arrive meanwhile are included; each pass removes what it read.
        count = 0
        while True:
            batch = cast(list[Any], self.redis.zrange(self._key(queue, ".XQ"), 0, 499))
            ids = [_text(i) for i in batch]
            if not ids:
                return count
            count += sum(1 for i in ids if action(queue, i))


def _dead_letter(queue: str, redis_id: str, score_ms: float, data: Any, note: Any) -> DeadLetter:
    message = _loads(data) or {}
    options = message.get("options") or {}
    note_data = _loads(note) or {}
    trace = note_data.get("traceback") or options.get("traceback")
    stamp = message.get("message_timestamp")
    return DeadLetter(
        queue=queue,
        id=redis_id,
        message_id=message.get("message_id"),
        actor=message.get("actor_name"),
        args=list(message.get("args") or []),
        kwargs=dict(message.get("kwargs") or {}),
        error=note_data.get("error") or _last_line(trace),
        traceback=trace,
        failed_at=score_ms / 1000,
        enqueued_at=float(stamp) / 1000 if stamp else None,
        retries=int(options.get("retries") or 0),
        correlation_id=options.get("correlation_id"),
    )


def _fresh_message(data: str | bytes, queue: str, new_id: str) -> str:
    message = json.loads(data)
    options = {
        k: v
        for k, v in (message.get("options") or {}).items()
        if k not in ("eta", "traceback", "retries", "requeue_timestamp")
    }
    options["redis_message_id"] = new_id
    options["requeued_from_dead_letters"] = int(time.time() * 1000)
    message["options"] = options
    message["queue_name"] = queue  # a letter that died in the delay queue goes back to the queue
    return json.dumps(message, separators=(",", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _loads(data: str | bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _last_line(trace: str | None) -> str | None:
    if not trace:
        return None
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None
