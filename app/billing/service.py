"""Billing: the per-minute ledger. Functions never commit.

Interface used by other domains (implemented by the billing domain):
- settle_rental(session, rental, until): bill everything up to `until`, the final partial minute
  included (called by the rentals domain in the transaction that ends a rental).
- cost_so_far(rental, now): what the rental has cost until `now` (billed + not yet billed).
- credit_minutes_left(balance, cost_per_hour): whole minutes the balance still pays for.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from app.rentals.models import Rental


def settle_rental(session: Session, rental: Rental, until: datetime) -> None:
    raise NotImplementedError


def cost_so_far(rental: Rental, now: datetime) -> Decimal:
    raise NotImplementedError


def credit_minutes_left(balance: Decimal, cost_per_hour: Decimal) -> int | None:
    raise NotImplementedError
