"""Billing's rules: what seconds cost, how an amount splits, what a rental has cost so far.

They write nothing; only cost_so_far reads, through the rental's own session (its posted figures,
and for an active rental its clock: app/billing/accrued.py). The rule they implement is described
in app/billing/service.py.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import object_session

from app.billing.accrued import rental_costs
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
    """What the rental has cost until `now`, exact to the second: posted, plus the seconds its
    clock has run since its last posting as far as the renter's balance covers them.

    An ended rental is settled, so its cost is exactly what its postings say (`billed_amount`, on
    the rental row and its accrual row alike).
    """
    session = object_session(rental)
    posted = _posted(rental)
    if rental.status != RentalStatus.ACTIVE or rental.start_time is None or session is None:
        return posted
    return rental_costs(session, renter_id=rental.renter_id, now=now).get(rental.id, posted)


def _posted(rental: Rental) -> Decimal:
    session = object_session(rental)
    accrual = session.get(RentalAccrual, rental.id) if session and rental.id else None
    if accrual is not None:
        return quantize(Decimal(accrual.billed_amount))
    return quantize(Decimal(rental.billed_amount or 0))


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
