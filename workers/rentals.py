"""Rental lifecycle actors (provisioning, agent events, stop, timeouts).

Each actor opens its own unit of work, locks the rental, checks its state, makes the transition
and commits; only then does it send commands to the node's agent. Every actor may run twice for
the same message (at-least-once delivery): a repeat finds the state already changed and does
nothing more than re-send a command the agent treats as done.
"""

from __future__ import annotations

import logging

import dramatiq

from app.config import get_settings
from app.db import session_scope
from app.rentals import service
from app.rentals.service import Outcome

log = logging.getLogger(__name__)


def _after_commit(outcome: Outcome, rental_id: str) -> None:
    if outcome.commands:
        from app.fleet.commands import send_to_node

        assert outcome.node_id is not None
        for event, data in outcome.commands:
            send_to_node(str(outcome.node_id), event, data)
    if outcome.check_start_in is not None:
        check_start_timeout.send_with_options(
            args=(rental_id,), delay=int(outcome.check_start_in * 1000) + 250
        )


@dramatiq.actor(
    queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000, time_limit=60_000
)
def provision_rental(rental_id: str) -> None:
    """Reserve the node and ports of a pending rental and send start_instance to its agent."""
    with session_scope() as session:
        outcome = service.provision(session, rental_id=rental_id, settings=get_settings())
    _after_commit(outcome, rental_id)


# The agent socket hands agent events to these actors; they own the rental state transitions.
@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_started(node_id: str, rental_id: str, container_id: str) -> None:
    """The agent reports the rental's container running."""
    with session_scope() as session:
        outcome = service.started(
            session,
            node_id=node_id,
            rental_id=rental_id,
            container_id=container_id,
            settings=get_settings(),
        )
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_failed(node_id: str, rental_id: str, reason: str) -> None:
    """The agent could not start the rental's container."""
    with session_scope() as session:
        outcome = service.failed(session, node_id=node_id, rental_id=rental_id, reason=reason)
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_stopped(
    node_id: str, rental_id: str, container_id: str | None, exit_code: int | None
) -> None:
    """The agent reports the rental's container gone (stopped by us or exited by itself)."""
    with session_scope() as session:
        outcome = service.stopped(
            session,
            node_id=node_id,
            rental_id=rental_id,
            container_id=container_id,
            exit_code=exit_code,
        )
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def stop_rental(rental_id: str, reason: str | None = None) -> None:
    """Stop a rental through the normal path (billing uses it for `insufficient balance`)."""
    with session_scope() as session:
        outcome = service.stop(session, rental_id=rental_id, reason=reason)
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def check_start_timeout(rental_id: str) -> None:
    """Cancel the rental if its agent has not reported it running in time."""
    with session_scope() as session:
        outcome = service.check_start(session, rental_id=rental_id, settings=get_settings())
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def end_rental_on_offline_node(rental_id: str) -> None:
    """End one active rental whose node stayed offline past the grace period."""
    with session_scope() as session:
        outcome = service.end_on_offline_node(session, rental_id=rental_id, settings=get_settings())
    _after_commit(outcome, rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=3, time_limit=60_000)
def end_rentals_on_offline_nodes() -> None:
    """Periodic: end active rentals on nodes offline longer than RENTAL_OFFLINE_GRACE_SECONDS."""
    with session_scope() as session:
        ids = service.rentals_on_offline_nodes(session, settings=get_settings())
    for rental_id in ids:
        end_rental_on_offline_node.send(rental_id)


@dramatiq.actor(queue_name="rentals", max_retries=3, time_limit=60_000)
def expire_pending_rentals() -> None:
    """Periodic: a safety net for start checks whose delayed message was lost."""
    with session_scope() as session:
        ids = service.overdue_pending_rentals(session, settings=get_settings())
    for rental_id in ids:
        check_start_timeout.send(rental_id)


PERIODIC_JOBS = [
    (end_rentals_on_offline_nodes, lambda settings: 30),
    (expire_pending_rentals, lambda settings: 60),
]
