"""Billing test data: renters, hosts, nodes and active rentals written straight to the database."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from app.auth.models import User
from app.billing import accrued
from app.billing.models import EntryKind, RentalAccrual, Transaction
from app.billing.rules import cost_so_far
from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus, TransactionType
from app.fleet.models import HostNode
from app.redis_client import get_redis
from app.rentals.models import Rental
from tests.factories import node_payload


@dataclass
class Party:
    """One active rental with its renter, host and node (ids only: sessions come and go)."""

    rental_id: uuid.UUID
    renter_id: uuid.UUID
    host_id: uuid.UUID
    node_id: uuid.UUID
    cost_per_hour: Decimal
    start: datetime


def make_account(session: Any, *, balance: str | Decimal = "0") -> User:
    """A user whose balance comes from a top-up line, so the ledger stays balanced."""
    user = User(clerk_id=f"user_{uuid.uuid4().hex[:16]}", balance=Decimal(0))
    session.add(user)
    session.flush()
    amount = Decimal(balance)
    if amount > 0:
        session.add(
            Transaction(
                user_id=user.id,
                amount=amount,
                type=TransactionType.CREDIT,
                kind=EntryKind.TOPUP,
                reference_id=f"test-{uuid.uuid4()}",
            )
        )
        user.balance = amount
    return user


def make_party(
    session: Any,
    *,
    price: str | Decimal = "6.0000",
    balance: str | Decimal = "100",
    start: datetime | None = None,
    renter: User | None = None,
    host: User | None = None,
    node_status: NodeStatus = NodeStatus.BUSY,
    last_seen_at: datetime | None = None,
) -> Party:
    """An active rental at `price` per hour that started at `start` (default: now)."""
    start = start or utcnow()
    renter = renter or make_account(session, balance=balance)
    host = host or make_account(session)
    body = node_payload(pricing={"hourly_rate": str(price)})
    node = HostNode(
        owner_id=host.id,
        name="rig",
        specs=body["specs"],
        pricing=body["pricing"],
        location=body["location"],
        status=node_status,
        last_seen_at=last_seen_at or utcnow(),
    )
    session.add(node)
    session.flush()
    rental = Rental(
        renter_id=renter.id,
        node_id=node.id,
        status=RentalStatus.ACTIVE,
        image="localhost/busybox:latest",
        cost_per_hour=Decimal(price),
        start_time=start,
    )
    session.add(rental)
    session.flush()
    return Party(
        rental_id=rental.id,
        renter_id=renter.id,
        host_id=host.id,
        node_id=node.id,
        cost_per_hour=Decimal(price),
        start=start,
    )


def create_party(**kwargs: Any) -> Party:
    with session_scope() as session:
        return make_party(session, **kwargs)


def balance_of(user_id: uuid.UUID, at: datetime | None = None) -> Decimal:
    """The user's balance as every reader sees it at `at` (default: now): posted, less what its
    active rentals owe."""
    with session_scope() as session:
        return accrued.balance_of(session, user_id, now=at)


def posted_balance_of(user_id: uuid.UUID) -> Decimal:
    """The account row's balance: what the ledger lines hold."""
    with session_scope() as session:
        return session.execute(select(User.balance).where(User.id == user_id)).scalar_one()


def cost_at(party: Party, at: datetime) -> Decimal:
    """What the party's rental has cost until `at` (posted, plus what the balance covers since)."""
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        return cost_so_far(rental, at)


def rental_row(rental_id: uuid.UUID) -> Rental:
    with session_scope() as session:
        return session.execute(select(Rental).where(Rental.id == rental_id)).scalar_one()


def ledger(rental_id: uuid.UUID) -> dict[str, Decimal]:
    """The rental's ledger lines summed by kind."""
    with session_scope() as session:
        rows = session.execute(
            select(Transaction.kind, func.sum(Transaction.amount))
            .where(Transaction.rental_id == rental_id)
            .group_by(Transaction.kind)
        ).all()
    sums = {kind: Decimal(0) for kind in ("usage", "earning", "fee")}
    sums.update({kind: total for kind, total in rows})
    return sums


def accrual(rental_id: uuid.UUID) -> RentalAccrual | None:
    """The rental's posted bill (None before its first posting)."""
    with session_scope() as session:
        return session.get(RentalAccrual, rental_id)


def billed_seconds(rental_id: uuid.UUID) -> int:
    row = accrual(rental_id)
    return 0 if row is None else row.billed_seconds


def line_count(rental_id: uuid.UUID | None = None) -> int:
    """Ledger lines of usage, earnings and fees (of one rental, or of all)."""
    with session_scope() as session:
        query = (
            select(func.count())
            .select_from(Transaction)
            .where(Transaction.kind.in_(["usage", "earning", "fee"]))
        )
        if rental_id is not None:
            query = query.where(Transaction.rental_id == rental_id)
        return session.execute(query).scalar_one()


def accrual_count() -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(RentalAccrual)).scalar_one()


def queued_stops() -> list[dict[str, Any]]:
    """The stop_rental messages waiting on the real rentals queue: their keyword arguments."""
    messages = [json.loads(m) for m in get_redis().hvals("dramatiq:rentals.msgs")]
    return [m["kwargs"] for m in messages if m["actor_name"] == "stop_rental"]
