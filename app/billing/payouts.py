"""Payouts: a host asks to be paid out of its available balance; an admin approves or rejects.

Functions never commit.

Every step is a pair of ledger lines of the payout's exact amount (`transactions.payout_id`), so
every account keeps balance = credits - debits:

- request: the host's balance is debited and the payouts-pending account credited (`payout`);
- reject: pending is debited and the host credited back (`payout_return`);
- approve: pending is debited and the payouts-paid account credited (`payout_paid`): the money
  has left the platform.

So the pending account always holds the sum of the requested payouts, and the paid account the
sum of the approved ones (app/billing/audit.py checks both).

*Available* is what a host may ask for: its balance as everyone sees it (posted, less what its own
rentals owe as a renter: app/billing/accrued.py), less what it earned within the last
PAYOUT_HOLD_DAYS (posted `earning` lines). Earnings not posted yet are not in the balance at all
(they reach it at the rental's next posting). Requested payouts are already out of the balance.

Locking. The billing run does not lock account rows; it reads a renter's balance and relies on
nothing else taking money out of a balance until its UPDATE lands (see _POST_SQL in
app/billing/service.py). A payout takes money out, and a host can also be a renter. So every
payout step first takes the platform account's row lock, the very lock that serialises billing
runs: a payout waits for a run in progress and a run waits for the payout, so neither reads a
balance the other is about to lower, and what the host owes as a renter cannot be posted under
it. Then the host's row is locked (FOR NO KEY UPDATE, as a balance UPDATE would, which
leaves foreign-key checks of concurrent inserts alone): two requests of one host run one after
the other, and the second sees the first one's debit. The order is always platform account, then
payout, then user rows, the same order a billing run takes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.auth.models import User
from app.billing.accrued import balance_of
from app.billing.models import (
    PAYOUTS_PAID_CLERK_ID,
    PAYOUTS_PENDING_CLERK_ID,
    SYSTEM_CLERK_IDS,
    EntryKind,
    Payout,
    PayoutStatus,
    Transaction,
)
from app.billing.service import platform_account_id, system_account_id
from app.config import Settings
from app.db import utcnow
from app.enums import TransactionType
from app.errors import Conflict, NotFound, ValidationFailed
from app.money import quantize
from app.pagination import newest_first_page

# What a host earned that is not payable yet: posted earnings within the hold period.
_HELD_SQL = """
    SELECT COALESCE(SUM(amount), 0) FROM transactions
    WHERE user_id = :user AND kind = 'earning' AND type = 'credit' AND created_at > :held_since
"""


def held_earnings(
    session: Session, *, user_id: uuid.UUID, settings: Settings, now: datetime | None = None
) -> Decimal:
    """What the user earned that the hold period still keeps back."""
    held_since = (now or utcnow()) - timedelta(days=settings.payout_hold_days)
    return Decimal(
        session.execute(text(_HELD_SQL), {"user": user_id, "held_since": held_since}).scalar_one()
    )


def available_for_payout(
    session: Session, *, user: User, settings: Settings, now: datetime | None = None
) -> Decimal:
    """The user's balance (less what it owes as a renter) less its held earnings, never below
    zero."""
    held = held_earnings(session, user_id=user.id, settings=settings, now=now)
    balance = balance_of(session, user.id, now=now)
    return max(Decimal(0), quantize(balance - held))


def request_payout(
    session: Session,
    *,
    user_id: uuid.UUID,
    amount: Decimal,
    settings: Settings,
    now: datetime | None = None,
) -> Payout:
    """Request a payout of `amount`; 409 when it is more than is available now."""
    if amount <= 0:
        raise ValidationFailed(
            "A payout must be a positive amount.", errors={"amount": ["Must be greater than 0."]}
        )
    amount = quantize(amount)
    platform_account_id(session)  # the billing runs' lock: see the module docstring
    user = _lock_user(session, user_id)
    if user.clerk_id in SYSTEM_CLERK_IDS:
        raise ValidationFailed(
            "The platform's accounts are not paid out.",
            errors={"amount": ["The platform's accounts are not paid out."]},
        )
    available = available_for_payout(session, user=user, settings=settings, now=now)
    if amount > available:
        raise Conflict(
            f"Only {available} is available for a payout now (earnings of the last "
            f"{settings.payout_hold_days} days are held).",
            errors={"amount": [f"At most {available}."]},
        )
    pending_id = system_account_id(session, PAYOUTS_PENDING_CLERK_ID)
    payout = Payout(id=uuid.uuid4(), user_id=user.id, amount=amount)
    session.add(payout)
    session.flush()
    _move(
        session,
        payout,
        EntryKind.PAYOUT,
        debit=user.id,
        credit=pending_id,
        what="Payout requested",
    )
    session.refresh(payout)
    return payout


def approve_payout(session: Session, *, payout_id: uuid.UUID, admin: User) -> Payout:
    """Approve a requested payout: the money leaves the platform. A second decision is a 409."""
    platform_account_id(session)
    payout = _lock_payout(session, payout_id)
    payout.transition(PayoutStatus.APPROVED)
    _decide(payout, admin, reason=None)
    _move(
        session,
        payout,
        EntryKind.PAYOUT_PAID,
        debit=system_account_id(session, PAYOUTS_PENDING_CLERK_ID),
        credit=system_account_id(session, PAYOUTS_PAID_CLERK_ID),
        what="Payout approved",
    )
    return payout


def reject_payout(session: Session, *, payout_id: uuid.UUID, admin: User, reason: str) -> Payout:
    """Reject a requested payout: the amount goes back to the host. A second decision is a 409."""
    platform_account_id(session)
    payout = _lock_payout(session, payout_id)
    payout.transition(PayoutStatus.REJECTED)
    _decide(payout, admin, reason=reason)
    _lock_user(session, payout.user_id)
    _move(
        session,
        payout,
        EntryKind.PAYOUT_RETURN,
        debit=system_account_id(session, PAYOUTS_PENDING_CLERK_ID),
        credit=payout.user_id,
        what=f"Payout rejected: {reason}",
    )
    return payout


def get_payout(session: Session, *, payout_id: uuid.UUID, user: User, is_admin: bool) -> Payout:
    """The payout, if it is the user's (any payout for an admin); 404 otherwise."""
    payout = session.get(Payout, payout_id)
    if payout is None or (payout.user_id != user.id and not is_admin):
        raise NotFound("No such payout.")
    return payout


def list_payouts(
    session: Session,
    *,
    user: User,
    limit: int,
    cursor: str | None,
    status: PayoutStatus | None = None,
) -> tuple[list[Payout], str | None]:
    """The user's payouts, newest first, a page at a time."""
    query = select(Payout).where(Payout.user_id == user.id)
    if status is not None:
        query = query.where(Payout.status == status.value)
    return newest_first_page(session, query, Payout, limit=limit, cursor=cursor)


def requested_payouts(session: Session, *, limit: int = 100) -> list[Payout]:
    """Payouts waiting for a decision, oldest first (the ops page)."""
    return list(
        session.execute(
            select(Payout)
            .where(Payout.status == PayoutStatus.REQUESTED.value)
            .order_by(Payout.created_at, Payout.id)
            .limit(limit)
        ).scalars()
    )


def _lock_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.execute(
        select(User)
        .where(User.id == user_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("No such user.")
    return user


def _lock_payout(session: Session, payout_id: uuid.UUID) -> Payout:
    payout = session.execute(
        select(Payout)
        .where(Payout.id == payout_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if payout is None:
        raise NotFound("No such payout.")
    return payout


def _decide(payout: Payout, admin: User, *, reason: str | None) -> None:
    payout.decided_by = admin.id
    payout.decided_at = utcnow()
    payout.reason = reason


def _move(
    session: Session,
    payout: Payout,
    kind: EntryKind,
    *,
    debit: uuid.UUID,
    credit: uuid.UUID,
    what: str,
) -> None:
    """Write one step of a payout: a debit and a credit of its amount, and the two balances."""
    reference = f"payout:{payout.id}/{kind.value}"
    for user_id, direction in ((debit, TransactionType.DEBIT), (credit, TransactionType.CREDIT)):
        session.add(
            Transaction(
                user_id=user_id,
                amount=payout.amount,
                type=direction,
                kind=kind.value,
                reference_id=reference,
                payout_id=payout.id,
                description=what,
            )
        )
        delta = payout.amount if direction is TransactionType.CREDIT else -payout.amount
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(balance=User.balance + delta)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    # The UPDATEs bypassed the identity map: keep the session's users truthful.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, User) and obj.id in (debit, credit):
            session.expire(obj, ["balance"])
