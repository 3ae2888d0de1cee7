"""The rental state machine: every status change goes through :func:`transition_rental`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.db import utcnow
from app.enums import RentalStatus
from app.errors import InvalidTransition
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


def transition_rental(
    session: Session,
    rental: Rental,
    new_status: RentalStatus,
    *,
    reason: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Move `rental` to `new_status` (the caller holds its row lock).

    `at` is when it happened (start time for `active`, end time for the terminal states);
    `reason` is kept as `failure_reason`. Returns False when the rental already has that status,
    so a redelivered event changes nothing.
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
    else:
        rental.end_time = when
    if reason is not None:
        rental.failure_reason = reason[:2000]
    session.flush()
    return True
