"""Live node data in Redis: last seen, agent-reported status and a metrics summary.

The socket server writes here on every heartbeat (pipelined, batched); PostgreSQL only learns
`last_seen_at` when the liveness job flushes it in one statement, so a heartbeat costs no
database write.

Keys:
- ``dc:node:<id>:live`` (hash): ``last_seen`` (epoch seconds), ``last_seen_ms``, ``status`` (as the
  agent last reported it, or ``offline`` once the liveness job gave up on it) and a metrics summary (``cpu_temp``, ``gpu_temp_max``, ``gpu_util_avg``,
  ``ram_usage_mb``, ``disk_usage_gb``); ``agent_version`` after a hello.
- ``dc:nodes:last_seen`` (sorted set): node id scored by last seen, for the liveness job.
- ``dc:nodes:offline`` (set): nodes the liveness job marked offline; the socket server removes a
  node on its next heartbeat and asks a worker to bring it back at once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.orm import Session

from app.db import after_commit
from app.redis_client import get_redis

LAST_SEEN_ZSET = "dc:nodes:last_seen"
OFFLINE_SET = "dc:nodes:offline"
HEARTBEATS_COUNTER = "dc:metrics:heartbeats"  # total heartbeats received (ops: heartbeats/s)
FLUSHED_UNTIL_KEY = "dc:fleet:last_seen_flushed"
LIVE_TTL_SECONDS = 7 * 24 * 3600
TTL_REFRESH_SECONDS = 3600  # a live hash's TTL is set again at most this often by the socket server


def live_key(node_id: str) -> str:
    return f"dc:node:{node_id}:live"


@dataclass(frozen=True, slots=True)
class Sighting:
    """One heartbeat (or hello) as received: what the batch writer stores for the node."""

    node_id: str
    received_at: float
    status: str | None = None
    metrics: dict[str, Any] | None = None
    agent_version: str | None = None


def summary(metrics: dict[str, Any]) -> dict[str, str]:
    """The few numbers kept in the live hash (the full series goes to InfluxDB)."""
    out: dict[str, str] = {}
    for name in ("cpu_temp", "cpu_utilization", "ram_usage_mb", "disk_usage_gb"):
        value = metrics.get(name)
        if value is not None:
            out[name] = _num(value)
    temps = metrics.get("gpu_temp") or []
    if temps:
        out["gpu_temp_max"] = _num(max(temps))
    utils = metrics.get("gpu_utilization") or []
    if utils:
        out["gpu_util_avg"] = _num(sum(utils) / len(utils))
    return out


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def write_sightings(
    client: redis.Redis, sightings: list[Sighting], ttl_set: dict[str, float] | None = None
) -> list[str]:
    """Store a batch in one round trip; return the node ids that were marked offline.

    `ttl_set` is the caller's memo of when it last set each node's TTL (epoch seconds): with it,
    a node's TTL is set again only every TTL_REFRESH_SECONDS, not on every heartbeat.
    """
    pipe = client.pipeline(transaction=False)
    latest: dict[str, float] = {}
    for s in sightings:
        key = live_key(s.node_id)
        mapping: dict[str, Any] = {
            "last_seen": int(s.received_at),
            "last_seen_ms": int(s.received_at * 1000),
        }
        if s.status is not None:
            mapping["status"] = s.status
        if s.metrics is not None:
            mapping.update(summary(s.metrics))
        if s.agent_version is not None:
            mapping["agent_version"] = s.agent_version
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        if ttl_set is None:
            pipe.expire(key, LIVE_TTL_SECONDS)
        elif s.received_at - ttl_set.get(s.node_id, 0.0) >= TTL_REFRESH_SECONDS:
            pipe.expire(key, LIVE_TTL_SECONDS)
            ttl_set[s.node_id] = s.received_at
        latest[s.node_id] = max(latest.get(s.node_id, 0.0), s.received_at)
    pipe.zadd(LAST_SEEN_ZSET, latest)  # type: ignore[arg-type]
    heartbeats = sum(1 for s in sightings if s.metrics is not None)
    if heartbeats:
        pipe.incrby(HEARTBEATS_COUNTER, heartbeats)
    nodes = list(latest)
    pipe.smismember(OFFLINE_SET, nodes)  # type: ignore[arg-type]
    members = pipe.execute()[-1]
    offline = [node for node, member in zip(nodes, members, strict=True) if member]
    if not offline:  # the usual case: one round trip, one command per node fewer
        return []
    pipe = client.pipeline(transaction=False)
    for node in offline:  # one SREM each: its reply says whether this batch brought it back
        pipe.srem(OFFLINE_SET, node)
    removed = pipe.execute()
    return [node for node, count in zip(offline, removed, strict=True) if count]


def last_seen(client: redis.Redis, node_id: str) -> float | None:
    score = client.zscore(LAST_SEEN_ZSET, node_id)
    return float(score) if score is not None else None


def seen_since(client: redis.Redis, since: float | None) -> dict[str, float]:
    """Node id -> last seen (epoch seconds) for every node seen at or after `since`."""
    low = "-inf" if since is None else since
    rows: list[tuple[str, float]] = client.zrangebyscore(  # type: ignore[assignment]
        LAST_SEEN_ZSET, low, "+inf", withscores=True
    )
    return {member: float(score) for member, score in rows}


def mark_offline(client: redis.Redis, node_ids: Iterable[str]) -> None:
    """The liveness job marked these nodes offline; the next heartbeat of each brings it back."""
    ids = list(node_ids)
    if not ids:
        return
    pipe = client.pipeline(transaction=False)
    pipe.sadd(OFFLINE_SET, *ids)
    for node_id in ids:
        pipe.hset(live_key(node_id), "status", "offline")
        pipe.expire(live_key(node_id), LIVE_TTL_SECONDS)
    pipe.execute()


def clear_offline(client: redis.Redis, node_ids: Iterable[str]) -> None:
    ids = list(node_ids)
    if ids:
        client.srem(OFFLINE_SET, *ids)


def clear_offline_after_commit(session: Session, node_ids: Iterable[str]) -> None:
    """As :func:`clear_offline`, once `session` commits the node's return."""
    ids = list(node_ids)
    after_commit(session, functools.partial(clear_offline, get_redis(), ids), name="clear_offline")


def prune(client: redis.Redis, older_than: float) -> None:
    """Forget nodes not seen for a long time (their rows keep last_seen_at)."""
    client.zremrangebyscore(LAST_SEEN_ZSET, "-inf", f"({older_than}")


def seen_count(client: redis.Redis, *, since: float) -> int:
    """How many nodes were heard from at or after `since` (epoch seconds)."""
    return int(client.zcount(LAST_SEEN_ZSET, since, "+inf"))  # type: ignore[arg-type]


def heartbeats_total(client: redis.Redis) -> int:
    """Heartbeats received since the counter was created (ops derives a rate from it)."""
    return int(client.get(HEARTBEATS_COUNTER) or 0)  # type: ignore[arg-type]
