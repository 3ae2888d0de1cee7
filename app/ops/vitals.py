"""The platform's vital signs: agents connected, nodes and rentals by status, billing lag, jobs.

Fleet scores every node by when it was last seen in the sorted set ``dc:nodes:last_seen`` (see
app/fleet/live.py) and queues commands per node in the Redis stream ``dc:node:<id>:commands``,
deleting each entry when the agent acks it (app/fleet/commands.py), so a stream's first entry is
its oldest unacked command. Heartbeats are counted in ``dc:metrics:heartbeats``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.enums import NodeStatus, RentalStatus
from app.fleet.live import HEARTBEATS_COUNTER, LAST_SEEN_ZSET
from app.fleet.models import HostNode
from app.ops.jobs import job_runs, job_sends
from app.rentals.models import Rental

log = logging.getLogger(__name__)

NODE_KEY_PREFIX = "dc:node:"
COMMANDS_SUFFIX = ":commands"
HEARTBEATS_KEY = HEARTBEATS_COUNTER


@dataclass(frozen=True)
class AgentVitals:
    connected: int
    oldest_command_age_s: float | None
    oldest_command_node: str | None


def count_heartbeats(pipe: Any, count: int = 1) -> None:
    """Count agent heartbeats (call it on the pipeline that stores them)."""
    pipe.incrby(HEARTBEATS_KEY, count)


def heartbeats_total(client: redis.Redis) -> int:
    return int(client.get(HEARTBEATS_KEY) or 0)  # type: ignore[arg-type]


def agent_vitals(client: redis.Redis, *, timeout_s: float, now: float | None = None) -> AgentVitals:
    now = time.time() if now is None else now
    connected = cast(int, client.zcount(LAST_SEEN_ZSET, now - timeout_s, "+inf"))
    streams = [
        raw.decode() if isinstance(raw, bytes) else raw
        for raw in client.scan_iter(match=f"{NODE_KEY_PREFIX}*{COMMANDS_SUFFIX}", count=1000)
    ]
    pipe = client.pipeline(transaction=False)
    for key in streams:
        pipe.xrange(key, "-", "+", count=1)
    oldest_ms: float | None = None
    oldest_node: str | None = None
    for key, entries in zip(streams, pipe.execute() if streams else [], strict=True):
        if not entries:
            continue
        entry_id = _text(entries[0][0]) or "0-0"
        stamp = float(entry_id.split("-", 1)[0])  # stream ids start with their time in ms
        if oldest_ms is None or stamp < oldest_ms:
            oldest_ms = stamp
            oldest_node = key[len(NODE_KEY_PREFIX) : -len(COMMANDS_SUFFIX)]
    age = max(0.0, now - oldest_ms / 1000) if oldest_ms is not None else None
    return AgentVitals(
        connected=connected, oldest_command_age_s=age, oldest_command_node=oldest_node
    )


def nodes_by_status(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in NodeStatus}
    for status, count in session.execute(
        select(HostNode.status, func.count()).group_by(HostNode.status)
    ):
        counts[str(status.value if hasattr(status, "value") else status)] = count
    return counts


def rentals_by_status(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in RentalStatus}
    for status, count in session.execute(
        select(Rental.status, func.count()).group_by(Rental.status)
    ):
        counts[str(status.value if hasattr(status, "value") else status)] = count
    return counts


def billing_lag_seconds(session: Session, now: datetime) -> float:
    """Now minus the oldest unbilled minute among active rentals (0 when none is active)."""
    oldest = session.execute(
        select(
            func.min(Rental.start_time + func.make_interval(0, 0, 0, 0, 0, Rental.billed_minutes))
        ).where(Rental.status == RentalStatus.ACTIVE, Rental.start_time.is_not(None))
    ).scalar()
    if oldest is None:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


def periodic_jobs(
    client: redis.Redis, settings: Any, *, now: float | None = None
) -> list[dict[str, Any]]:
    """Each periodic job with its interval and the age of its last run and last send."""
    now = time.time() if now is None else now
    runs, sends = job_runs(client), job_sends(client)
    try:
        from workers.registry import periodic_jobs as registered

        jobs = registered()
    except Exception:
        log.warning("could not load the periodic jobs", exc_info=True)
        jobs = []
    out = []
    for actor, seconds in jobs:
        name = actor.actor_name
        try:
            interval = int(seconds(settings))
        except Exception:
            interval = None
        out.append(
            {
                "name": name,
                "queue": actor.queue_name,
                "interval_s": interval,
                "last_run": runs.get(name),
                "last_sent": sends.get(name),
                "last_run_age_s": round(now - runs[name], 1) if name in runs else None,
                "last_sent_age_s": round(now - sends[name], 1) if name in sends else None,
            }
        )
    return out


def last_run_age(jobs: list[dict[str, Any]], queue: str) -> float | None:
    """The age of the most recent run among the periodic jobs of `queue` (None: never ran)."""
    ages = [
        j["last_run_age_s"] for j in jobs if j["queue"] == queue and j["last_run_age_s"] is not None
    ]
    return min(ages) if ages else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
