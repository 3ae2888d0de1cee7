"""Fleet actors: an agent's hello, nodes going silent and coming back.

The socket server only validates frames and hands them over; node rows change here.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope, utcnow
from app.enums import NodeStatus
from app.fleet import commands, live, liveness, maintenance, selftest
from app.fleet.models import HostNode
from app.queue.actors import actor, unit_of_work
from app.queue.periodic import PeriodicJob, register
from app.redis_client import get_redis
from app.rentals.actors import stop_rental

log = logging.getLogger(__name__)
# Re-read this much before the last flush: a socket server may store a heartbeat stamped a
# little before one that another server stored earlier.
FLUSH_OVERLAP_SECONDS = 30
PRUNE_AFTER_SECONDS = 7 * 24 * 3600
RETRIES = {"max_retries": 5, "min_backoff": 500, "max_backoff": 10_000}


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@actor(queue_name="fleet", time_limit=30_000, **RETRIES)
@unit_of_work
def record_hello(
    session: Session,
    node_id: str,
    agent_version: str,
    specs: dict[str, Any],
    containers: list[dict[str, Any]],
    seen_at: float,
) -> None:
    """Record what the agent detected, bring the node back, and stop containers it should not run."""
    node = session.get(HostNode, uuid.UUID(node_id), with_for_update=True)
    if node is None:
        return
    liveness.apply_hello(
        session,
        node=node,
        specs=specs,
        agent_version=agent_version,
        seen_at=_at(seen_at),
        now=utcnow(),
        timeout_seconds=get_settings().heartbeat_timeout_seconds,
    )
    selftest.after_hello(session, node=node, specs=specs, settings=get_settings())
    stale = liveness.stale_containers(session, node_id=node.id, containers=containers)
    released = liveness.reconcile(session, node=node, containers=containers)
    if node.status != NodeStatus.OFFLINE:
        live.clear_offline_after_commit(session, [node_id])
    for container in stale:
        # One queued stop per container (a repeat supersedes it), dropped first when the node's
        # command stream is full: the next hello reports the container again.
        commands.send_after_commit(
            session,
            node_id,
            "stop_instance",
            {"rental_id": container["rental_id"], "container_id": container["container_id"]},
            disposable=True,
        )
    if stale or released:
        log.info(
            "containers reconciled",
            extra={"node_id": node_id, "stopped": len(stale), "ports_released": released},
        )


@actor(queue_name="fleet", time_limit=30_000, **RETRIES)
@unit_of_work
def node_seen(session: Session, node_id: str, seen_at: float) -> None:
    """An offline node sent a heartbeat: bring it back now rather than at the next sweep."""
    cutoff = _at(time.time() - get_settings().heartbeat_timeout_seconds)
    liveness.node_seen(session, node_id=uuid.UUID(node_id), seen_at=_at(seen_at), cutoff=cutoff)


@actor(queue_name="fleet", max_retries=0, time_limit=60_000)
def check_node_liveness(now: float | None = None) -> None:
    """Flush last-seen times to PostgreSQL, then mark silent nodes offline and heard ones back.

    `now` (epoch seconds) defaults to the current time. Three short transactions, so that the
    row locks of one step are not held through the next.
    """
    timeout = get_settings().heartbeat_timeout_seconds
    now = time.time() if now is None else now
    redis = get_redis()

    flushed_until = redis.get(live.FLUSHED_UNTIL_KEY)
    since = float(flushed_until) - FLUSH_OVERLAP_SECONDS if flushed_until else None
    seen = live.seen_since(redis, since)
    if seen:
        with session_scope() as session:
            liveness.flush_last_seen(session, seen)
        redis.set(live.FLUSHED_UNTIL_KEY, repr(max(seen.values())))

    cutoff = _at(now - timeout)
    with session_scope() as session:
        gone = liveness.mark_silent_offline(session, cutoff=cutoff, timeout_seconds=timeout)
    live.mark_offline(redis, (str(node_id) for node_id in gone))
    with session_scope() as session:
        back = liveness.revive_seen(session, cutoff=cutoff)
    live.clear_offline(redis, (str(node_id) for node_id in back))
    live.prune(redis, time.time() - PRUNE_AFTER_SECONDS)
    if gone or back:
        log.info(
            "node liveness", extra={"offline": len(gone), "back": len(back), "flushed": len(seen)}
        )


def liveness_interval(settings: Settings) -> int:
    """Often enough that a node goes offline within about a quarter timeout of its deadline."""
    return max(1, min(5, settings.heartbeat_timeout_seconds // 4))


# The agent socket hands `self_test_result` here (app/ws/dispatch.py).
@actor(queue_name="fleet", time_limit=60_000, **RETRIES)
@unit_of_work
def on_self_test_result(
    session: Session,
    node_id: str,
    run_id: str,
    nonce: str,
    measured: dict[str, Any],
    failures: list[str],
    proof: dict[str, Any],
) -> None:
    """The agent reports a self-test: check its proof and figures, settle `verified`."""
    selftest.record_result(
        session,
        node_id=node_id,
        run_id=run_id,
        nonce=nonce,
        measured=measured,
        failures=failures,
        proof=proof,
    )


@actor(queue_name="fleet", time_limit=30_000, **RETRIES)
@unit_of_work
def request_self_test(session: Session, node_id: str, trigger: str) -> None:
    """Queue a self-test for a node (the owner asked, or another job did)."""
    node = session.get(HostNode, uuid.UUID(node_id), with_for_update=True)
    if node is not None:
        selftest.request_run(session, node=node, trigger=trigger, settings=get_settings())


@actor(queue_name="fleet", max_retries=3, time_limit=60_000)
@unit_of_work
def expire_self_tests(session: Session) -> None:
    """Periodic: fail self-tests whose agent did not answer within SELF_TEST_TIMEOUT_SECONDS."""
    selftest.expire_runs(
        session, now=utcnow(), timeout_seconds=get_settings().self_test_timeout_seconds
    )


@actor(queue_name="fleet", max_retries=3, time_limit=60_000)
def run_maintenance_windows(now: float | None = None) -> None:
    """Periodic: begin the maintenance windows that are due (the node leaves the market, its
    rentals end) and end those that are over. One short transaction per window."""
    at = _at(time.time() if now is None else now)
    with session_scope() as session:
        due = maintenance.due_windows(session, now=at)
    for window_id in due:
        with session_scope(raise_hook_errors=True) as session:
            for rental_id in maintenance.apply_window(session, window_id=window_id, now=at):
                stop_rental.send_after_commit(
                    session, rental_id=rental_id, reason=maintenance.MAINTENANCE_REASON
                )


PERIODIC_JOBS = register(
    PeriodicJob(check_node_liveness, liveness_interval),
    PeriodicJob(expire_self_tests, lambda settings: 60),
    PeriodicJob(run_maintenance_windows, lambda settings: maintenance.INTERVAL_SECONDS),
)
