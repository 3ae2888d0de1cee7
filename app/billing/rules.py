"""Billing's pure rules: what minutes cost, how a charge splits, what a rental has cost so far.

No database access; the rule they implement is described in app/billing/service.py.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from app.config import get_settings
from app.enums import RentalStatus
from app.money import quantize
from app.rentals.models import Rental

SIXTY = Decimal(60)


def amount_for_minutes(cost_per_hour: Decimal, minutes: int) -> Decimal:
    """What the first `minutes` minutes of a rental cost (rounded once, cumulatively)."""
    return quantize(Decimal(cost_per_hour) * minutes / SIXTY)


def charge_for(cost_per_hour: Decimal, after: int, upto: int) -> Decimal:
    """What minutes (after, upto] cost: amount(upto) - amount(after)."""
    return amount_for_minutes(cost_per_hour, upto) - amount_for_minutes(cost_per_hour, after)


def split_fee(amount: Decimal, fee_percent: Decimal) -> tuple[Decimal, Decimal]:
    """(host share, platform fee) of a charge; the fee is rounded once, the host gets the rest."""
    fee = quantize(amount * fee_percent / Decimal(100))
    return amount - fee, fee


def started_minutes(seconds: float | Decimal) -> int:
    """Minutes started after `seconds` of billable time (minute k is billed once it starts)."""
    if seconds <= 0:
        return 0
    return math.ceil(Decimal(seconds) / SIXTY)


def cost_so_far(rental: Rental, now: datetime) -> Decimal:
    """What the rental has cost until `now`: what is billed, plus started minutes not billed yet.

    A live rental's unbilled part is an estimate from the wall clock, capped at the minutes one
    billing tick can leave unbilled (it cannot know about offline time the tick will not bill);
    an ended rental is settled, so its cost is exactly what was billed.
    """
    billed = quantize(Decimal(rental.billed_amount or 0))
    if rental.status != RentalStatus.ACTIVE or rental.start_time is None:
        return billed
    clock_end = min(now, rental.stop_requested_at) if rental.stop_requested_at else now
    elapsed = (clock_end - rental.start_time).total_seconds()
    due = started_minutes(elapsed)
    cap = rental.billed_minutes + started_minutes(get_settings().billing_tick_seconds) + 1
    upto = min(due, cap)
    if upto <= rental.billed_minutes:
        return billed
    return billed + charge_for(rental.cost_per_hour, rental.billed_minutes, upto)


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
