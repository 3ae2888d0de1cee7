"""The rental state machine: every status change goes through :func:`transition_rental`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from agent.protocol import FAILURE_CODES as AGENT_FAILURE_CODES
from app.db import utcnow
from app.enums import RentalStatus
from app.errors import InvalidTransition
from app.rentals import gpus
from app.rentals.models import Rental

PENDING, ACTIVE, COMPLETED, CANCELLED = (
    RentalStatus.PENDING,
    RentalStatus.ACTIVE,
    RentalStatus.COMPLETED,
    RentalStatus.CANCELLED,
)

RENTAL_TRANSITIONS: dict[RentalStatus, frozenset[RentalStatus]] = {
    # A rental that never ran ends cancelled; one that ran ends completed.
    PENDING: frozenset({ACTIVE, CANCELLED}),
    ACTIVE: frozenset({COMPLETED}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
}
LIVE = frozenset({PENDING, ACTIVE})
TERMINAL = frozenset({COMPLETED, CANCELLED})

# `phase`: where a rental is. A pending one is queued, then pulling and starting as its agent
# reports (instance_progress); an active one is running, or stopping once a stop was asked for.
PHASES = ("queued", "pulling", "starting", "running", "stopping", "ended")
# Why a rental did not start: the agent's codes, and the platform's own node_offline.
FAILURE_CODES = (*AGENT_FAILURE_CODES, "node_offline")


def transition_rental(
    session: Session,
    rental: Rental,
    new_status: RentalStatus,
    *,
    reason: str | None = None,
    at: datetime | None = None,
    failure_code: str | None = None,
) -> bool:
    """Move `rental` to `new_status` (the caller holds its row lock).

    `at` is when it happened (start time for `active`, end time for the terminal states);
    `reason` is kept as `failure_reason`, `failure_code` (one of FAILURE_CODES) with it. Returns
    False when the rental already has that status, so a redelivered event changes nothing.
    """
    current = RentalStatus(rental.status)
    if current == new_status:
        return False
    if new_status not in RENTAL_TRANSITIONS[current]:
        raise InvalidTransition(f"A rental cannot go from {current} to {new_status}.")
    when = at or utcnow()
    rental.status = new_status
    if new_status == ACTIVE:
        rental.start_time = when
        rental.phase = "running"
    else:
        rental.end_time = when
        rental.phase = "ended"
        # Its GPUs go back to the node with the end, in this transaction: no path forgets them.
        gpus.release(session, rental, when)
    rental.progress = None
    # The pull is over either way: the sealed registry credentials are not kept past it.
    rental.registry_auth_sealed = None
    if reason is not None:
        rental.failure_reason = reason[:2000]
    if failure_code is not None:
        if failure_code not in FAILURE_CODES:
            raise ValueError(f"unknown failure_code {failure_code!r}")
        rental.failure_code = failure_code
    session.flush()
    return True
