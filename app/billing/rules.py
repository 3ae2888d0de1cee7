"""Billing's rules: what seconds cost, how an amount splits, what a rental has cost so far.

They write nothing; only cost_so_far reads, through the rental's own session (its running bill
and whether its node is offline). The rule they implement is described in app/billing/service.py.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import object_session

from app.billing.models import RentalAccrual
from app.enums import RentalStatus
from app.money import quantize
from app.rentals.models import Rental

SIXTY = Decimal(60)
HOUR = Decimal(3600)


def amount_for_seconds(cost_per_hour: Decimal, seconds: int) -> Decimal:
    """What the first `seconds` seconds of a rental cost (rounded once, cumulatively)."""
    return quantize(Decimal(cost_per_hour) * seconds / HOUR)


def amount_for_minutes(cost_per_hour: Decimal, minutes: int) -> Decimal:
    """What the first `minutes` whole minutes of a rental cost (the same rule, per second)."""
    return amount_for_seconds(cost_per_hour, minutes * 60)


def fee_for(amount: Decimal, fee_percent: Decimal) -> Decimal:
    """The platform's share of `amount`, rounded once; the host gets the rest."""
    return quantize(Decimal(amount) * Decimal(fee_percent) / Decimal(100))


def split_fee(amount: Decimal, fee_percent: Decimal) -> tuple[Decimal, Decimal]:
    """(host share, platform fee) of an amount."""
    fee = fee_for(amount, fee_percent)
    return amount - fee, fee


def whole_seconds(seconds: float | Decimal) -> int:
    """The whole seconds in `seconds` (the fraction of a second is free)."""
    if seconds <= 0:
        return 0
    return math.floor(Decimal(seconds))


def cost_so_far(rental: Rental, now: datetime) -> Decimal:
    """What the rental has cost until `now`: what is billed, plus the seconds not billed yet.

    A live rental's unbilled part is its clock since the billing watermark, which stops at a stop
    request and, while the node is offline, at its last heartbeat (an offline spell that has
    already ended is taken off by the next tick); an ended rental is settled, so its cost is
    exactly what was billed.
    """
    accrual = _accrual_of(rental)
    until: datetime | None
    if accrual is not None:
        billed, seconds, until = (
            quantize(Decimal(accrual.billed_amount)),
            accrual.billed_seconds,
            accrual.billed_until,
        )
    else:
        # Not billed per second yet: the rental row's per-minute watermark.
        billed, seconds = quantize(Decimal(rental.billed_amount or 0)), rental.billed_minutes * 60
        until = rental.start_time + timedelta(seconds=seconds) if rental.start_time else None
    if rental.status != RentalStatus.ACTIVE or rental.start_time is None or until is None:
        return billed
    clock_end = min(now, rental.stop_requested_at) if rental.stop_requested_at else now
    offline_since = _offline_since(rental)
    if offline_since is not None:
        clock_end = min(clock_end, offline_since)
    extra = whole_seconds((clock_end - until).total_seconds())
    if extra <= 0:
        return billed
    price = Decimal(rental.cost_per_hour)
    return billed + amount_for_seconds(price, seconds + extra) - amount_for_seconds(price, seconds)


def _accrual_of(rental: Rental) -> RentalAccrual | None:
    session = object_session(rental)
    if session is None or rental.id is None:
        return None
    return session.get(RentalAccrual, rental.id)


def _offline_since(rental: Rental) -> datetime | None:
    """The last heartbeat of the rental's node when it is offline (None when it is not)."""
    session = object_session(rental)
    if session is None or rental.node_id is None:
        return None
    row = session.execute(
        text("SELECT status, last_seen_at FROM host_nodes WHERE id = :n"), {"n": rental.node_id}
    ).one_or_none()
    if row is None or row.status != "offline":
        return None
    return row.last_seen_at or rental.start_time


def credit_minutes_left(balance: Decimal, cost_per_hour: Decimal) -> int | None:
    """Whole minutes that `balance` pays for at `cost_per_hour` (None when the price is zero)."""
    price = Decimal(cost_per_hour)
    if price <= 0:
        return None
    balance = Decimal(balance)
    if balance < 0:
        return 0
    minutes = int(balance * SIXTY / price)
    # Rounding to 4 places can make one more (or one fewer) minute fit than the exact ratio.
    while amount_for_minutes(price, minutes + 1) <= balance:
        minutes += 1
    while minutes > 0 and amount_for_minutes(price, minutes) > balance:
        minutes -= 1
    return minutes
