"""The platform's vital signs: agents connected, nodes and rentals by status, billing lag, jobs.

Fleet's Redis data is read through fleet's own helpers (app/fleet/live.py for last-seen times and
the heartbeat count, app/fleet/commands.py for the oldest unacked command); the billing lag through
billing's (app/billing/service.py: unbilled_since).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.billing.service import unbilled_since
from app.enums import NodeStatus, RentalStatus
from app.fleet import commands, live
from app.fleet.models import HostNode
from app.ops.jobs import job_runs, job_sends
from app.queue import periodic
from app.rentals.models import Rental

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentVitals:
    connected: int
    oldest_command_age_s: float | None
    oldest_command_node: str | None


def heartbeats_total(client: redis.Redis) -> int:
    return live.heartbeats_total(client)


def agent_vitals(client: redis.Redis, *, timeout_s: float, now: float | None = None) -> AgentVitals:
    now = time.time() if now is None else now
    oldest = commands.oldest_pending(client)
    return AgentVitals(
        connected=live.seen_count(client, since=now - timeout_s),
        oldest_command_age_s=max(0.0, now - oldest[1]) if oldest is not None else None,
        oldest_command_node=oldest[0] if oldest is not None else None,
    )


def nodes_by_status(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in NodeStatus}
    for status, count in session.execute(
        select(HostNode.status, func.count()).group_by(HostNode.status)
    ):
        counts[str(status.value if hasattr(status, "value") else status)] = count
    return counts


def gpus_in_use(session: Session) -> dict[str, int]:
    """GPUs across the fleet (nodes not offline) and how many of them live rentals hold."""
    total, used = session.execute(
        select(
            func.coalesce(func.sum(HostNode.gpu_count), 0),
            func.coalesce(func.sum(func.least(HostNode.gpus_in_use, HostNode.gpu_count)), 0),
        ).where(HostNode.status != NodeStatus.OFFLINE)
    ).one()
    return {"total": int(total), "in_use": int(used)}


def rentals_by_status(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in RentalStatus}
    for status, count in session.execute(
        select(Rental.status, func.count()).group_by(Rental.status)
    ):
        counts[str(status.value if hasattr(status, "value") else status)] = count
    return counts


def billing_lag_seconds(session: Session, now: datetime) -> float:
    """Now minus the oldest billing watermark among active rentals (0 when none is active)."""
    oldest = unbilled_since(session)
    if oldest is None:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


def periodic_jobs(
    client: redis.Redis, settings: Any, *, now: float | None = None
) -> list[dict[str, Any]]:
    """Each periodic job with its interval and the age of its last run and last send."""
    now = time.time() if now is None else now
    runs, sends = job_runs(client), job_sends(client)
    out = []
    for actor, seconds in periodic.registered():
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
