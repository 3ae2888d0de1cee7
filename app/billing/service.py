"""Billing: per-second running totals, settled each minute, posted to the ledger hourly.

Functions never commit.

Interface used by other domains:
- settle_rental(session, rental, until): bill everything up to `until` and post it (called by the
  rentals domain in the transaction that ends a rental).
- unbilled_since(session): the oldest billing watermark among active rentals (the ops domain's
  billing lag).
- app/billing/rules.py: cost_so_far(rental, now), what the rental has cost until `now` (billed +
  not yet billed); credit_minutes_left(balance, cost_per_hour), the whole minutes the balance
  still pays for.
- app/billing/audit.py: check_invariants(session), the ledger's invariants as queries.

The billing rule:

- A rental has a *billable clock* that starts at `start_time` and stands still while its node is
  offline. It is charged for the whole seconds of that clock at its locked price, rounded once and
  cumulatively: after s seconds the rental has cost ``round_half_up(cost_per_hour * s / 3600)``,
  however many runs billed them (the fraction of a second is free).
- The node's offline time is free. While the node is `offline` the clock stops at its last
  heartbeat (`host_nodes.last_seen_at`). An offline spell that has ended is taken from the
  node's status history: it ran from the `offline` event minus HEARTBEAT_TIMEOUT_SECONDS (the
  node was flipped that long after its last heartbeat) until the next status event. A node that
  is not (yet) marked offline is billed up to now; the clock is recomputed from the start at every
  run and never goes back, so seconds billed before fleet noticed a spell are paid for by the
  seconds that follow it.
- The clock also stops when a stop is requested (`rentals.stop_requested_at`, by the renter, an
  admin or billing itself): the time the agent takes to confirm is free.
- The running bill is one `rental_accruals` row per rental, updated in place: seconds billed, the
  amount the renter paid for them, the amount waived (what an empty balance could not cover, never
  charged later) and the platform fee. Balances move with every run (a renter's falls each
  minute). Ledger lines are *posted* per rental once an hour of its wall clock has passed and when
  it ends: a renter `usage` debit, a host `earning` credit and a platform `fee` credit to the
  platform account (PLATFORM_CLERK_ID), each the difference between the running total and what
  was posted before, so the posted lines add up to the running totals exactly.
- The fee is ``round_half_up(billed_amount * PLATFORM_FEE_PERCENT / 100)`` over the rental's
  running total (never decreasing, never more than what the renter paid); the host gets the rest.
- A renter's balance never goes below zero: a run takes only what the balance covers, oldest
  rental first. A renter who cannot pay for the next minute gets the rental stopped
  (`app.rentals.actors.stop_rental`, reason "insufficient balance"); the request is repeated on
  later ticks only until the rentals domain records it (`rentals.stop_requested_at`).
- No double charge: billing runs one at a time (each locks the platform account's row first); a
  run writes an accrual row only if it still holds what the run read (seconds, amount, postings);
  balances move only with the rows written, in the same statement; a posting's lines are unique
  per (rental, posting number, kind); and check constraints hold every row to the rounding rule.
  A periodic run skips rentals whose rows another transaction holds (a rental being ended is
  settled by that transaction; the others are caught up next time, from the watermark).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.auth.models import User
from app.billing.models import (
    PLATFORM_CLERK_ID,
    SYSTEM_CLERK_IDS,
    EntryKind,
    RentalAccrual,
    Transaction,
)
from app.config import Settings, get_settings
from app.enums import TransactionType
from app.errors import Conflict, NotFound, ValidationFailed
from app.pagination import newest_first_page
from app.rentals.models import Rental

INSUFFICIENT_BALANCE = "insufficient balance"


# ------------------------------------------------------------------------------ the run
def platform_account_id(session: Session) -> uuid.UUID:
    """The platform account's id, created on first use and row-locked until the transaction ends.

    Every billing run (tick or settlement) credits this row, so holding its lock serialises the
    billing runs: a second run waits, then sees the first one's watermarks.
    """
    return system_account_id(session, PLATFORM_CLERK_ID)


def system_account_id(session: Session, clerk_id: str) -> uuid.UUID:
    """The id of one of the platform's own accounts, created on first use and row-locked until
    the transaction ends."""
    return session.execute(
        text(
            "INSERT INTO users (id, clerk_id, balance) VALUES (gen_random_uuid(), :clerk, 0) "
            "ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id RETURNING id"
        ),
        {"clerk": clerk_id},
    ).scalar_one()


# One statement bills every selected rental: lock the rental rows; work out the seconds due on the
# billable clock and what the renter's balance covers; update the accrual rows in place (a new
# rental gets its row); post the ledger lines of the rentals whose hour has passed (or that end:
# :final); move the balances by what the written rows say. {where} selects the rentals; {skip} is
# "SKIP LOCKED" for the periodic tick (a rental being ended is settled by its own transaction) and
# empty for a settlement (which must wait for its rental).
#
# Account rows are not locked up front (that would write each of them twice): only billing and
# payouts take money out of a balance, and both hold the platform account's row lock while they do
# (billing runs one at a time; a payout request takes the same lock, see app/billing/payouts.py),
# so the balance this statement reads is at most what the account holds when its UPDATE lands (a
# top-up committing in between only adds), and a renter's balance is never overdrawn. The UPDATE
# waits for a top-up in flight.
_BILL_SQL = """
WITH live AS MATERIALIZED (
    SELECT r.id AS rental_id, r.renter_id, COALESCE(a.host_id, n.owner_id) AS host_id,
           r.node_id, COALESCE(a.cost_per_hour, r.cost_per_hour) AS cost_per_hour, r.start_time,
           r.stop_requested_at, ur.balance AS renter_balance, a.rental_id IS NOT NULL AS known,
           COALESCE(a.billed_seconds, 0) AS old_seconds,
           COALESCE(a.billed_until, r.start_time) AS old_until,
           COALESCE(a.billed_amount, 0) AS old_amount,
           COALESCE(a.waived_amount, 0) AS old_waived,
           COALESCE(a.billed_fee, 0) AS old_fee,
           COALESCE(a.posted_seconds, 0) AS posted_seconds,
           COALESCE(a.posted_amount, 0) AS posted_amount,
           COALESCE(a.posted_fee, 0) AS posted_fee,
           COALESCE(a.postings, 0) AS postings,
           COALESCE(a.posted_until, r.start_time) AS posted_until,
           -- The clock stops at the node's last heartbeat while it is offline, and at the
           -- moment the renter (or billing) asked to stop: the wait for the agent is free.
           LEAST(CASE WHEN n.status = 'offline'
                      THEN LEAST(CAST(:until AS timestamptz),
                                 GREATEST(r.start_time, COALESCE(n.last_seen_at, r.start_time)))
                      ELSE CAST(:until AS timestamptz) END,
                 GREATEST(r.start_time, COALESCE(r.stop_requested_at, 'infinity'))) AS clock_end
    FROM rentals r
    JOIN host_nodes n ON n.id = r.node_id
    LEFT JOIN rental_accruals a ON a.rental_id = r.id
    JOIN users ur ON ur.id = r.renter_id
    JOIN users uh ON uh.id = COALESCE(a.host_id, n.owner_id)
    WHERE r.start_time IS NOT NULL AND {where}
    FOR UPDATE OF r {skip}
),
due AS MATERIALIZED (
    SELECT l.*, GREATEST(l.old_seconds, CAST(FLOOR(GREATEST(0,
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
                   ) g), 0))) AS bigint)) AS new_seconds
    FROM live l
),
priced AS (
    SELECT d.*,
           ROUND(d.cost_per_hour * d.new_seconds / 3600, 4) - d.old_amount - d.old_waived
             AS nominal,
           ROUND(d.cost_per_hour * (d.new_seconds + 60) / 3600, 4)
             - ROUND(d.cost_per_hour * d.new_seconds / 3600, 4) AS next_minute
    FROM due d
),
covered AS (
    -- A renter's rentals are paid oldest first; whatever the balance cannot cover is not charged.
    SELECT p.*, LEAST(p.nominal, GREATEST(0, p.renter_balance - COALESCE(SUM(p.nominal) OVER (
               PARTITION BY p.renter_id ORDER BY p.start_time, p.rental_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS amount
    FROM priced p
),
split AS MATERIALIZED (
    SELECT c.*, c.old_amount + c.amount AS new_amount,
           c.old_waived + c.nominal - c.amount AS new_waived,
           -- The fee of the running total, never falling and never above what the renter paid.
           LEAST(c.old_fee + c.amount, GREATEST(c.old_fee, ROUND((c.old_amount + c.amount)
                 * CAST(:fee_percent AS numeric) / 100, 4))) AS new_fee,
           c.renter_balance - SUM(c.amount) OVER (PARTITION BY c.renter_id) AS balance_after,
           (CAST(:final AS boolean)
              OR CAST(:until AS timestamptz) >= c.posted_until + interval '1 hour') AS post,
           CASE WHEN CAST(:final AS boolean)
                THEN GREATEST(c.posted_until, CAST(:until AS timestamptz))
                ELSE c.posted_until + make_interval(hours => CAST(FLOOR(GREATEST(0, EXTRACT(EPOCH
                       FROM CAST(:until AS timestamptz) - c.posted_until)) / 3600) AS integer))
           END AS new_posted_until
    FROM covered c
),
plan AS MATERIALIZED (
    SELECT s.*, s.postings + CASE WHEN s.post AND s.new_amount > s.posted_amount THEN 1 ELSE 0
                             END AS new_postings
    FROM split s
    WHERE NOT s.known OR s.new_seconds > s.old_seconds OR s.post
),
created AS (
    INSERT INTO rental_accruals (rental_id, renter_id, host_id, cost_per_hour, billed_seconds,
                                 billed_until, billed_amount, waived_amount, billed_fee,
                                 posted_seconds, posted_amount, posted_fee, postings,
                                 posted_until)
    SELECT p.rental_id, p.renter_id, p.host_id, p.cost_per_hour, p.new_seconds,
           GREATEST(p.old_until, p.clock_end), p.new_amount, p.new_waived, p.new_fee,
           CASE WHEN p.post THEN p.new_seconds ELSE 0 END,
           CASE WHEN p.post THEN p.new_amount ELSE 0 END,
           CASE WHEN p.post THEN p.new_fee ELSE 0 END,
           p.new_postings, CASE WHEN p.post THEN p.new_posted_until ELSE p.posted_until END
    FROM plan p
    WHERE NOT p.known
    ON CONFLICT (rental_id) DO NOTHING
    RETURNING rental_id
),
updated AS (
    UPDATE rental_accruals a
    SET billed_seconds = p.new_seconds,
        billed_until = GREATEST(a.billed_until, p.clock_end),
        billed_amount = p.new_amount,
        waived_amount = p.new_waived,
        billed_fee = p.new_fee,
        posted_seconds = CASE WHEN p.post THEN p.new_seconds ELSE a.posted_seconds END,
        posted_amount = CASE WHEN p.post THEN p.new_amount ELSE a.posted_amount END,
        posted_fee = CASE WHEN p.post THEN p.new_fee ELSE a.posted_fee END,
        postings = p.new_postings,
        posted_until = CASE WHEN p.post THEN p.new_posted_until ELSE a.posted_until END
    FROM plan p
    -- Only a row that still holds what this run read: a run that lost a race writes nothing.
    WHERE a.rental_id = p.rental_id AND p.known
      AND a.billed_seconds = p.old_seconds AND a.billed_amount = p.old_amount
      AND a.postings = p.postings AND a.posted_amount = p.posted_amount
    RETURNING a.rental_id
),
applied AS MATERIALIZED (
    SELECT p.* FROM plan p
    WHERE p.rental_id IN (SELECT rental_id FROM created UNION ALL SELECT rental_id FROM updated)
),
lines AS (
    INSERT INTO transactions (id, user_id, amount, type, kind, reference_id, rental_id, posting,
                              description)
    SELECT gen_random_uuid(), v.user_id, v.amount, CAST(v.type AS transaction_type), v.kind,
           CONCAT('rental:', p.rental_id, '/posting-', p.new_postings), p.rental_id,
           p.new_postings,
           v.what || ', rental ' || p.rental_id || ', seconds ' || (p.posted_seconds + 1)
             || '-' || p.new_seconds
    FROM applied p
    CROSS JOIN LATERAL (VALUES
        (p.renter_id, p.new_amount - p.posted_amount, 'debit', 'usage', 'GPU rental'),
        (p.host_id, (p.new_amount - p.new_fee) - (p.posted_amount - p.posted_fee), 'credit',
         'earning', 'Hosting earnings'),
        (CAST(:platform_id AS uuid), p.new_fee - p.posted_fee, 'credit', 'fee', 'Platform fee')
    ) AS v(user_id, amount, type, kind, what)
    WHERE p.post AND v.amount > 0
    RETURNING id
),
balances AS (
    UPDATE users u SET balance = u.balance + d.delta
    FROM (SELECT v.user_id, SUM(v.delta) AS delta
          FROM applied p
          CROSS JOIN LATERAL (VALUES
              (p.renter_id, -p.amount),
              (p.host_id, p.amount - (p.new_fee - p.old_fee)),
              (CAST(:platform_id AS uuid), p.new_fee - p.old_fee)
          ) AS v(user_id, delta)
          GROUP BY v.user_id
          HAVING SUM(v.delta) <> 0) d
    WHERE u.id = d.user_id
    RETURNING u.id
)
SELECT (SELECT count(*) FROM live) AS locked,
       (SELECT count(*) FROM applied) AS written,
       (SELECT count(*) FROM applied WHERE amount > 0) AS charged,
       (SELECT COALESCE(SUM(amount), 0) FROM applied) AS total,
       (SELECT count(*) FROM applied WHERE post AND new_postings > postings) AS postings,
       (SELECT count(*) FROM lines) AS lines,
       (SELECT count(*) FROM balances) AS balances,
       (SELECT array_agg(rental_id ORDER BY rental_id) FROM split
        WHERE stop_requested_at IS NULL
          AND (amount < nominal OR balance_after < next_minute)) AS out_of_credit
"""


@dataclass
class BillingRun:
    """What one billing run did (counts of rows it wrote, the amount it charged)."""

    locked: int = 0  # rentals the run looked at (their rows locked)
    written: int = 0  # accrual rows written (inserted or updated in place)
    charged: int = 0  # rentals charged a positive amount
    total: Decimal = Decimal(0)  # charged in all
    postings: int = 0  # postings made
    lines: int = 0  # ledger lines written
    balances: int = 0  # account rows whose balance moved
    to_stop: list[uuid.UUID] = field(default_factory=list)  # out of credit, not being stopped

    @property
    def rows_written(self) -> int:
        """Rows this run inserted or updated (accruals, ledger lines, balances)."""
        return self.written + self.lines + self.balances


def _run(
    session: Session,
    *,
    where: str,
    skip: str,
    until: datetime,
    settings: Settings,
    final: bool,
    params: dict[str, Any] | None = None,
) -> BillingRun:
    platform_id = platform_account_id(session)
    row = session.execute(
        text(_BILL_SQL.format(where=where, skip=skip)),
        {
            "until": until,
            "heartbeat_timeout": settings.heartbeat_timeout_seconds,
            "fee_percent": settings.platform_fee_percent,
            "platform_id": platform_id,
            "final": final,
            **(params or {}),
        },
    ).one()
    return BillingRun(
        locked=row.locked,
        written=row.written,
        charged=row.charged,
        total=Decimal(row.total),
        postings=row.postings,
        lines=row.lines,
        balances=row.balances,
        to_stop=list(row.out_of_credit or []),
    )


def bill_active_rentals(session: Session, *, now: datetime, settings: Settings) -> BillingRun:
    """Bill every active rental up to `now` and post the hours that have passed, in a constant
    number of statements.

    Rentals whose row another transaction holds (a rental being ended) are skipped and caught up
    by the next run, since every run bills from the watermark.
    """
    # The statement sorts and hashes every live rental once: in memory, not in temporary files.
    session.execute(text("SET LOCAL work_mem = '256MB'"))
    return _run(
        session,
        where="r.status = 'active'",
        skip="SKIP LOCKED",
        until=now,
        settings=settings,
        final=False,
    )


def settle_rental(session: Session, rental: Rental, until: datetime) -> None:
    """Bill the rental up to `until` and post everything it owes: its final posting.

    Called in the transaction that ends the rental (its status may already say so). Offline time
    stays free; a renter who cannot pay is charged what the balance covers.
    """
    if rental.start_time is None:
        return
    session.flush()
    _run(
        session,
        where="r.id = CAST(:rental_id AS uuid)",
        skip="",
        until=until,
        settings=get_settings(),
        final=True,
        params={"rental_id": str(rental.id)},
    )
    # The statement changed rows this session may hold: keep its objects truthful.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, User):
            session.expire(obj, ["balance"])
        elif isinstance(obj, RentalAccrual):
            session.expire(obj)
    accrual = session.get(RentalAccrual, rental.id)
    if accrual is not None:
        # The rental row keeps the settled figures (hosts see them on their rentals).
        rental.billed_amount = accrual.billed_amount
        rental.billed_minutes = math.ceil(accrual.billed_seconds / 60)


def unbilled_since(session: Session) -> datetime | None:
    """The oldest billing watermark among active rentals (None when none is active)."""
    return session.execute(
        text(
            "SELECT min(COALESCE(a.billed_until, r.start_time + make_interval("
            "mins => r.billed_minutes))) FROM rentals r "
            "LEFT JOIN rental_accruals a ON a.rental_id = r.id "
            "WHERE r.status = 'active' AND r.start_time IS NOT NULL"
        )
    ).scalar()


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
    if user.clerk_id in SYSTEM_CLERK_IDS:
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
