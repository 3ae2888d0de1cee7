"""Billing: the per-minute ledger. Functions never commit.

Interface used by other domains:
- settle_rental(session, rental, until): bill everything up to `until`, the final partial minute
  included (called by the rentals domain in the transaction that ends a rental).
- app/billing/rules.py: cost_so_far(rental, now), what the rental has cost until `now` (billed +
  not yet billed); credit_minutes_left(balance, cost_per_hour), the whole minutes the balance
  still pays for.

The billing rule:

- A rental has a *billable clock* that starts at `start_time` and stands still while its node is
  offline. Every started minute of that clock is billed: at time t the rental owes for
  ``m = ceil(billable_seconds(t) / 60)`` minutes.
- The node's offline time is free. While the node is `offline` the clock stops at its last
  heartbeat (`host_nodes.last_seen_at`). An offline spell that has ended is taken from the
  node's status history: it ran from the `offline` event minus HEARTBEAT_TIMEOUT_SECONDS (the
  node was flipped that long after its last heartbeat) until the next status event. A node that
  is not (yet) marked offline is billed up to now: a node that dies is billed until fleet marks
  it offline only within the minute already started, or one more at most.
- The clock also stops when a stop is requested (`rentals.stop_requested_at`, by the renter, an
  admin or billing itself): the minute in which the stop was asked for is billed, the time the
  agent takes to confirm is not.
- Billing runs one at a time: each run locks the platform account's row first. A periodic run
  skips rentals whose rows another transaction holds (they are caught up next time); a
  settlement waits for its rental.
- Cumulative rounding: the first m minutes cost ``amount(m) = quantize(cost_per_hour * m / 60)``
  and a charge for minutes (a, b] is ``amount(b) - amount(a)``, so however the minutes are split
  into ticks their sum is amount(total), never a cent of drift.
- Each charge is a renter `usage` debit, a host `earning` credit and a platform `fee` credit to
  the platform account (PLATFORM_CLERK_ID). The fee is ``quantize(amount * PLATFORM_FEE_PERCENT /
  100)``, rounded once per charge; the host gets the rest, so debit = earning + fee exactly.
- A renter's balance never goes below zero: a charge takes only what the balance covers, and the
  minutes it could not cover are not charged later. A renter who cannot pay for the next minute
  gets the rental stopped (`app.rentals.actors.stop_rental`, reason "insufficient balance"); the
  request is repeated on later ticks only until the rentals domain records it
  (`rentals.stop_requested_at`).
- The watermark is `rentals.billed_minutes` (minutes of the billable clock charged) and
  `rentals.billed_amount` (what the renter paid for them). Each charge is a `billing_charges`
  row; the constraints there make two charges for the same minutes impossible.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.auth.models import User
from app.billing.models import PLATFORM_CLERK_ID, EntryKind, Transaction
from app.config import Settings, get_settings
from app.enums import TransactionType
from app.errors import Conflict, NotFound, ValidationFailed
from app.pagination import newest_first_page
from app.rentals.models import Rental

INSUFFICIENT_BALANCE = "insufficient balance"
SIXTY = Decimal(60)


# ------------------------------------------------------------------------------ the charge
def platform_account_id(session: Session) -> uuid.UUID:
    """The platform account's id, created on first use and row-locked until the transaction ends.

    Every billing run (tick or settlement) credits this row, so holding its lock serialises the
    billing runs: a second run waits, then sees the first one's watermarks.
    """
    return session.execute(
        text(
            "INSERT INTO users (id, clerk_id, balance) VALUES (gen_random_uuid(), :clerk, 0) "
            "ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id RETURNING id"
        ),
        {"clerk": PLATFORM_CLERK_ID},
    ).scalar_one()


# One statement bills every selected rental: lock the rental, renter and host rows; work out the
# minutes due on the billable clock and what the renter's balance covers; write the periods, the
# ledger lines, the watermarks and the balances. {where} selects the rentals; {skip} is
# "SKIP LOCKED" for the periodic tick (a rental being ended right now is settled by its own
# transaction) and empty for a settlement (which must wait for its rental).
_BILL_SQL = """
WITH locked AS (
    SELECT r.id AS rental_id, r.renter_id, n.owner_id AS host_id, r.node_id, r.cost_per_hour,
           r.billed_minutes, r.start_time, r.stop_requested_at, ur.balance AS renter_balance,
           -- The clock stops at the node's last heartbeat while it is offline, and at the
           -- moment the renter (or billing) asked to stop: the wait for the agent is free.
           LEAST(CASE WHEN n.status = 'offline'
                      THEN LEAST(CAST(:until AS timestamptz),
                                 GREATEST(r.start_time, COALESCE(n.last_seen_at, r.start_time)))
                      ELSE CAST(:until AS timestamptz) END,
                 GREATEST(r.start_time, COALESCE(r.stop_requested_at, 'infinity'))) AS clock_end
    FROM rentals r
    JOIN host_nodes n ON n.id = r.node_id
    JOIN users ur ON ur.id = r.renter_id
    JOIN users uh ON uh.id = n.owner_id
    WHERE r.start_time IS NOT NULL AND {where}
    FOR UPDATE OF r, ur, uh {skip}
),
due AS MATERIALIZED (
    SELECT l.*, GREATEST(l.billed_minutes, CAST(CEIL(GREATEST(0,
               EXTRACT(EPOCH FROM (l.clock_end - l.start_time)) - COALESCE((
                   SELECT SUM(GREATEST(0, EXTRACT(EPOCH FROM
                              LEAST(g.gap_end, l.clock_end) - GREATEST(g.gap_start, l.start_time))))
                   FROM (
                       SELECT GREATEST(e.at - make_interval(secs => :heartbeat_timeout),
                                       COALESCE(prev.at, '-infinity')) AS gap_start,
                              COALESCE(nxt.at, 'infinity') AS gap_end
                       FROM node_status_events e
                       LEFT JOIN LATERAL (
                           SELECT p.at FROM node_status_events p
                           WHERE p.node_id = e.node_id AND p.at < e.at
                           ORDER BY p.at DESC LIMIT 1) prev ON true
                       LEFT JOIN LATERAL (
                           SELECT q.at FROM node_status_events q
                           WHERE q.node_id = e.node_id AND q.at > e.at
                           ORDER BY q.at LIMIT 1) nxt ON true
                       WHERE e.node_id = l.node_id AND e.status = 'offline'
                         AND e.at > l.start_time
                   ) g), 0)) / 60) AS integer)) AS to_minute
    FROM locked l
),
priced AS (
    SELECT d.*,
           ROUND(d.cost_per_hour * d.to_minute / 60, 4)
             - ROUND(d.cost_per_hour * d.billed_minutes / 60, 4) AS nominal,
           ROUND(d.cost_per_hour * (d.to_minute + 1) / 60, 4)
             - ROUND(d.cost_per_hour * d.to_minute / 60, 4) AS next_minute
    FROM due d
    WHERE d.to_minute > d.billed_minutes
),
covered AS (
    -- A renter's rentals are paid oldest first; whatever the balance cannot cover is not charged.
    SELECT p.*, LEAST(p.nominal, GREATEST(0, p.renter_balance - COALESCE(SUM(p.nominal) OVER (
               PARTITION BY p.renter_id ORDER BY p.start_time, p.rental_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS amount
    FROM priced p
),
split AS (
    SELECT c.*, ROUND(c.amount * CAST(:fee_percent AS numeric) / 100, 4) AS fee,
           c.renter_balance - SUM(c.amount) OVER (PARTITION BY c.renter_id) AS balance_after
    FROM covered c
),
charges AS (
    INSERT INTO billing_charges (id, rental_id, renter_id, host_id, from_minute, to_minute,
                                 nominal, amount, fee, billed_until)
    SELECT gen_random_uuid(), s.rental_id, s.renter_id, s.host_id, s.billed_minutes,
           s.to_minute, s.nominal, s.amount, s.fee, s.clock_end
    FROM split s
    RETURNING id, rental_id, renter_id, host_id, from_minute, to_minute, amount, fee
),
lines AS (
    INSERT INTO transactions (id, user_id, amount, type, kind, reference_id, rental_id,
                              charge_id, description)
    SELECT gen_random_uuid(), v.user_id, v.amount, CAST(v.type AS transaction_type), v.kind,
           CONCAT('rental:', c.rental_id, '/', c.from_minute + 1, '-', c.to_minute),
           c.rental_id, c.id,
           v.what || ', rental ' || c.rental_id || ', minutes ' || (c.from_minute + 1)
             || '-' || c.to_minute
    FROM charges c
    CROSS JOIN LATERAL (VALUES
        (c.renter_id, c.amount, 'debit', 'usage', 'GPU rental'),
        (c.host_id, c.amount - c.fee, 'credit', 'earning', 'Hosting earnings'),
        (CAST(:platform_id AS uuid), c.fee, 'credit', 'fee', 'Platform fee')
    ) AS v(user_id, amount, type, kind, what)
    WHERE v.amount > 0
    RETURNING user_id, amount, type
),
watermarks AS (
    UPDATE rentals r SET billed_minutes = c.to_minute, billed_amount = r.billed_amount + c.amount
    FROM charges c
    WHERE r.id = c.rental_id
    RETURNING r.id
),
balances AS (
    UPDATE users u SET balance = u.balance + d.delta
    FROM (SELECT user_id, SUM(CASE WHEN type = 'credit' THEN amount ELSE -amount END) AS delta
          FROM lines GROUP BY user_id) d
    WHERE u.id = d.user_id
    RETURNING u.id
)
SELECT s.rental_id, s.renter_id, s.billed_minutes AS from_minute, s.to_minute, s.nominal,
       s.amount, s.fee, s.balance_after, s.next_minute, s.stop_requested_at,
       (SELECT count(*) FROM watermarks) AS watermarks, (SELECT count(*) FROM balances) AS balances,
       (SELECT count(*) FROM locked) AS locked
FROM split s
"""


@dataclass(frozen=True)
class Charge:
    rental_id: uuid.UUID
    renter_id: uuid.UUID
    from_minute: int
    to_minute: int
    nominal: Decimal
    amount: Decimal
    fee: Decimal
    balance_after: Decimal
    next_minute: Decimal
    stop_requested: bool

    @property
    def short(self) -> bool:
        """The renter's balance did not cover these minutes."""
        return self.amount < self.nominal

    @property
    def out_of_credit(self) -> bool:
        """The renter cannot pay for this rental's next minute."""
        return self.short or self.balance_after < self.next_minute


@dataclass
class BillingRun:
    charges: list[Charge]
    locked: int = 0

    @property
    def to_stop(self) -> list[uuid.UUID]:
        """Rentals to stop for lack of credit (not already being stopped)."""
        return [c.rental_id for c in self.charges if c.out_of_credit and not c.stop_requested]

    @property
    def total(self) -> Decimal:
        return sum((c.amount for c in self.charges), Decimal(0))


def _run(
    session: Session,
    *,
    where: str,
    skip: str,
    until: datetime,
    settings: Settings,
    params: dict[str, Any] | None = None,
) -> BillingRun:
    platform_id = platform_account_id(session)
    rows = session.execute(
        text(_BILL_SQL.format(where=where, skip=skip)),
        {
            "until": until,
            "heartbeat_timeout": settings.heartbeat_timeout_seconds,
            "fee_percent": settings.platform_fee_percent,
            "platform_id": platform_id,
            **(params or {}),
        },
    ).all()
    charges = [
        Charge(
            rental_id=r.rental_id,
            renter_id=r.renter_id,
            from_minute=r.from_minute,
            to_minute=r.to_minute,
            nominal=r.nominal,
            amount=r.amount,
            fee=r.fee,
            balance_after=r.balance_after,
            next_minute=r.next_minute,
            stop_requested=r.stop_requested_at is not None,
        )
        for r in rows
    ]
    return BillingRun(charges=charges, locked=rows[0].locked if rows else 0)


def bill_active_rentals(session: Session, *, now: datetime, settings: Settings) -> BillingRun:
    """Bill every active rental up to `now`, in a constant number of statements.

    Rows another transaction holds (a rental being ended, a renter being topped up) are skipped
    and caught up by the next run, since every run bills from the watermark.
    """
    return _run(
        session, where="r.status = 'active'", skip="SKIP LOCKED", until=now, settings=settings
    )


def settle_rental(session: Session, rental: Rental, until: datetime) -> None:
    """Bill the rental up to `until`, the final partial minute included.

    Called in the transaction that ends the rental (its status may already say so). Offline time
    stays free; a renter who cannot pay is charged what the balance covers.
    """
    if rental.start_time is None:
        return
    session.flush()
    run = _run(
        session,
        where="r.id = CAST(:rental_id AS uuid)",
        skip="",
        until=until,
        settings=get_settings(),
        params={"rental_id": str(rental.id)},
    )
    for charge in run.charges:
        # The statement changed rows this session may hold: keep its objects truthful.
        set_committed_value(rental, "billed_minutes", charge.to_minute)
        set_committed_value(
            rental, "billed_amount", Decimal(rental.billed_amount or 0) + charge.amount
        )
        _expire_balances(session)


def _expire_balances(session: Session) -> None:
    for obj in list(session.identity_map.values()):
        if isinstance(obj, User):
            session.expire(obj, ["balance"])


# ------------------------------------------------------------------------------ top-ups
def top_up(
    session: Session,
    *,
    user_id: uuid.UUID,
    amount: Decimal,
    reference: str,
    description: str | None = None,
) -> tuple[Transaction, bool]:
    """Credit `amount` to a user once per `reference`; returns (ledger line, created now).

    The same reference again returns the first line and credits nothing; the same reference with
    another user or amount is a 409.
    """
    user = session.execute(
        select(User).where(User.id == user_id).with_for_update()
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("No such user.")
    if user.clerk_id == PLATFORM_CLERK_ID:
        raise ValidationFailed(
            "The platform account cannot be topped up.",
            errors={"user_id": ["The platform account cannot be topped up."]},
        )
    line_id = session.execute(
        insert(Transaction)
        .values(
            id=uuid.uuid4(),
            user_id=user.id,
            amount=amount,
            type=TransactionType.CREDIT,
            kind=EntryKind.TOPUP.value,
            reference_id=reference,
            description=description or "Credit top-up",
        )
        .on_conflict_do_nothing(
            index_elements=[Transaction.reference_id], index_where=text("kind = 'topup'")
        )
        .returning(Transaction.id)
    ).scalar_one_or_none()
    if line_id is None:
        existing = session.execute(
            select(Transaction).where(
                Transaction.kind == EntryKind.TOPUP.value, Transaction.reference_id == reference
            )
        ).scalar_one()
        if existing.user_id != user.id or existing.amount != amount:
            raise Conflict("This reference was already used for a different top-up.")
        return existing, False
    user.balance = user.balance + amount
    session.flush()
    return session.get_one(Transaction, line_id), True


def list_transactions(
    session: Session, *, user: User, limit: int, cursor: str | None
) -> tuple[list[Transaction], str | None]:
    """The user's ledger lines, newest first, a page at a time."""
    query = select(Transaction).where(Transaction.user_id == user.id)
    return newest_first_page(session, query, Transaction, limit=limit, cursor=cursor)
