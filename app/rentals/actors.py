"""Rental actors: provisioning, the agent's events, stop, and the timeouts.

Each actor is one unit of work (:func:`app.queue.actors.unit_of_work`) around one step of
app/rentals/lifecycle.py; the commands those steps queue for the agent go out after the commit.
Every actor may run twice for the same message (at-least-once delivery).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.config import get_settings
from app.queue.actors import actor, unit_of_work
from app.queue.periodic import PeriodicJob, register
from app.rentals import lifecycle, logs

# Retry for about the length of an outage of the database or Redis.
RETRIES = {"max_retries": 10, "min_backoff": 500, "max_backoff": 30_000}
START_CHECK_SLACK_MS = 250  # the check runs just after the deadline, not just before it


def _check_start_in(session: Session, rental_id: str, seconds: float | None) -> None:
    if seconds is not None:
        check_start_timeout.send_after_commit_with_delay(
            session, int(seconds * 1000) + START_CHECK_SLACK_MS, rental_id=rental_id
        )


@actor(queue_name="rentals", time_limit=60_000, **RETRIES)
@unit_of_work
def provision_rental(session: Session, rental_id: str) -> None:
    """Reserve the node and ports of a pending rental and send start_instance to its agent."""
    due = lifecycle.provision(session, rental_id=rental_id, settings=get_settings())
    _check_start_in(session, rental_id, due)


# The agent socket hands agent events to these (app/ws/dispatch.py): their parameters
# after node_id are the fields of the event.
@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def on_instance_started(session: Session, node_id: str, rental_id: str, container_id: str) -> None:
    """The agent reports the rental's container running."""
    lifecycle.started(
        session,
        node_id=node_id,
        rental_id=rental_id,
        container_id=container_id,
        settings=get_settings(),
    )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def on_instance_failed(
    session: Session,
    node_id: str,
    rental_id: str,
    reason: str,
    failure_code: str | None = None,
) -> None:
    """The agent could not start the rental's container."""
    lifecycle.failed(
        session, node_id=node_id, rental_id=rental_id, reason=reason, failure_code=failure_code
    )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def on_instance_progress(
    session: Session, node_id: str, rental_id: str, phase: str, progress: float | None = None
) -> None:
    """The agent is pulling the rental's image or starting its container."""
    lifecycle.progressed(
        session, node_id=node_id, rental_id=rental_id, phase=phase, progress=progress
    )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def on_final_logs(
    session: Session,
    node_id: str,
    request_id: str,
    rental_id: str,
    lines: list[str],
    seq: int,
    last: bool,
    truncated: bool = False,
) -> None:
    """One frame of the output a stopping container left (`logs` with request_id "final")."""
    logs.store_final(
        session,
        node_id=node_id,
        rental_id=rental_id,
        lines=lines,
        truncated=truncated,
        seq=seq,
    )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def on_instance_stopped(
    session: Session,
    node_id: str,
    rental_id: str,
    container_id: str | None,
    exit_code: int | None,
) -> None:
    """The agent reports the rental's container gone (stopped by us or exited by itself)."""
    lifecycle.stopped(
        session,
        node_id=node_id,
        rental_id=rental_id,
        container_id=container_id,
        exit_code=exit_code,
    )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def stop_rental(session: Session, rental_id: str, reason: str | None = None) -> None:
    """Stop a rental through the normal path (billing uses it for `insufficient balance`)."""
    due = lifecycle.stop(session, rental_id=rental_id, reason=reason, settings=get_settings())
    _check_stop_in(session, rental_id, due)


def _check_stop_in(session: Session, rental_id: str, seconds: float | None) -> None:
    if seconds is not None:
        check_stop_timeout.send_after_commit_with_delay(
            session, int(seconds * 1000) + START_CHECK_SLACK_MS, rental_id=rental_id
        )


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def check_stop_timeout(session: Session, rental_id: str) -> None:
    """Send an unconfirmed stop again; end the rental if it is still not confirmed later."""
    due = lifecycle.check_stop(session, rental_id=rental_id, settings=get_settings())
    _check_stop_in(session, rental_id, due)


@actor(queue_name="rentals", max_retries=3, time_limit=60_000)
@unit_of_work
def check_overdue_stops(session: Session) -> None:
    """Periodic: a safety net for stop checks whose delayed message was lost."""
    for rental_id in lifecycle.overdue_stops(session, settings=get_settings()):
        check_stop_timeout.send_after_commit(session, rental_id=rental_id)


@actor(queue_name="rentals", max_retries=3, time_limit=60_000)
@unit_of_work
def end_expired_port_quarantines(session: Session) -> None:
    """Periodic: ports quarantined longer than PORT_QUARANTINE_SECONDS go back to the pool."""
    lifecycle.end_expired_quarantines(session)


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def check_start_timeout(session: Session, rental_id: str) -> None:
    """Cancel the rental if its agent has not reported it running in time."""
    remaining = lifecycle.check_start(session, rental_id=rental_id, settings=get_settings())
    _check_start_in(session, rental_id, remaining)


@actor(queue_name="rentals", **RETRIES)
@unit_of_work
def end_rental_on_offline_node(session: Session, rental_id: str) -> None:
    """End one active rental whose node stayed offline past the grace period."""
    lifecycle.end_on_offline_node(session, rental_id=rental_id, settings=get_settings())


@actor(queue_name="rentals", max_retries=3, time_limit=60_000)
@unit_of_work
def end_rentals_on_offline_nodes(session: Session) -> None:
    """Periodic: end active rentals on nodes offline longer than RENTAL_OFFLINE_GRACE_SECONDS."""
    for rental_id in lifecycle.rentals_on_offline_nodes(session, settings=get_settings()):
        end_rental_on_offline_node.send_after_commit(session, rental_id=rental_id)


@actor(queue_name="rentals", max_retries=3, time_limit=60_000)
@unit_of_work
def expire_pending_rentals(session: Session) -> None:
    """Periodic: a safety net for start checks whose delayed message was lost."""
    for rental_id in lifecycle.overdue_pending_rentals(session, settings=get_settings()):
        check_start_timeout.send_after_commit(session, rental_id=rental_id)


PERIODIC_JOBS = register(
    PeriodicJob(end_rentals_on_offline_nodes, lambda settings: 30),
    PeriodicJob(expire_pending_rentals, lambda settings: 60),
    PeriodicJob(check_overdue_stops, lambda settings: 30),
    PeriodicJob(end_expired_port_quarantines, lambda settings: 300),
)
