"""Rental lifecycle actors (provisioning, agent events, stop, timeouts)."""

from __future__ import annotations

import logging

import dramatiq

log = logging.getLogger(__name__)


# The agent socket hands agent events to these actors; they own the rental state transitions.
@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_started(node_id: str, rental_id: str, container_id: str) -> None:
    """The agent reports the rental's container running."""
    log.info("instance started", extra={"node_id": node_id, "rental_id": rental_id})


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_failed(node_id: str, rental_id: str, reason: str) -> None:
    """The agent could not start the rental's container."""
    log.info("instance failed", extra={"node_id": node_id, "rental_id": rental_id})


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def on_instance_stopped(node_id: str, rental_id: str, container_id: str | None,
                        exit_code: int | None) -> None:
    """The agent reports the rental's container gone (stopped by us or exited by itself)."""
    log.info("instance stopped", extra={"node_id": node_id, "rental_id": rental_id})


@dramatiq.actor(queue_name="rentals", max_retries=10, min_backoff=500, max_backoff=30_000)
def stop_rental(rental_id: str, reason: str | None = None) -> None:
    """Stop a rental through the normal path (billing uses it for `insufficient balance`)."""
    log.info("stop requested", extra={"rental_id": rental_id, "reason": reason})
