"""Billing: per-second clocks, derived balances, postings to the ledger hourly and at the end.

Functions never commit.

Interface used by other domains:
- settle_rental(session, rental, until): bill everything up to `until` and post it (called by the
  rentals domain in the transaction that ends a rental).
- unbilled_since(session): how far the billing ticks have looked (the ops domain's billing lag).
- app/billing/accrued.py: balance_of(session, user_id) and balances(...), a user's balance as
  everyone sees it (posted, less what the user's active rentals owe), and rental_costs(...).
- app/billing/rules.py: cost_so_far(rental, now), what the rental has cost until `now`;
  credit_minutes_left(balance, cost_per_hour), the whole minutes a balance still pays for.
- app/billing/audit.py: check_invariants(session), the ledger's invariants as queries.

The billing rule:

- A rental has a *billable clock* that starts at `start_time` and stands still while its node is
  offline. It is charged for the whole seconds of that clock at its locked price, rounded once and
  cumulatively: after s seconds the rental has cost ``round_half_up(cost_per_hour * s / 3600)``
  (the fraction of a second is free).
- The node's offline time is free. While the node is `offline` the clock stops at its last
  heartbeat (`host_nodes.last_seen_at`). An offline spell that has ended is taken from the
  node's status history: it ran from the `offline` event minus HEARTBEAT_TIMEOUT_SECONDS (the
  node was flipped that long after its last heartbeat) until the next status event. A node that
  is not (yet) marked offline is billed up to now; seconds once *posted* are never taken back, so
  posted seconds before fleet noticed a spell are paid for by the seconds that follow it.
- The clock also stops when a stop is requested (`rentals.stop_requested_at`, by the renter, an
  admin or billing itself): the time the agent takes to confirm is free.
- What a rental has cost since its last posting is not stored: it is its clock's seconds since
  then, priced, and covered by the renter's posted balance oldest rental first (what the balance
  cannot cover is not charged). A renter's balance, as every reader sees it, is the posted
  balance less that (app/billing/accrued.py), so it falls every second without a row being
  written.
- A *posting* writes the rental's `rental_accruals` row (seconds, amount paid, amount waived,
  platform fee: the figures up to the clock's current second), three ledger lines (a renter
  `usage` debit, a host `earning` credit and a platform `fee` credit to PLATFORM_CLERK_ID), each
  the difference from the previous posting, and moves those three balances by as much. A rental
  posts when one of its hour marks (start_time + whole hours) has passed within the last two
  tick intervals (so postings spread over the hour with the rentals' start times, about 1/60 of
  them a minute, and a backlog never lands on one tick: a missed mark waits for the next one),
  when the renter's balance no longer covers what it owes (the waived part is fixed then, never
  charged after a top-up), and when it ends (the final posting).
- The fee is ``round_half_up(billed_amount * PLATFORM_FEE_PERCENT / 100)`` over the rental's
  posted total (never decreasing, never more than what the renter paid); the host gets the rest.
- A renter who cannot pay for the next minute gets the rental stopped
  (`app.rentals.actors.stop_rental`, reason "insufficient balance"), at most a tick after it
  happens: the tick works it out in SQL for every renter at once, exactly for the renters whose
  posted balance less an upper bound of what they owe (their clocks without the offline history)
  is under a minute of their dearest rental; the request is repeated on later ticks only until
  the rentals domain records it (`rentals.stop_requested_at`).
- No double charge: billing runs one at a time (each locks the platform account's row first); a
  run writes a posting only if the accrual row still holds what the run read (seconds, amount,
  postings); balances move only with the rows written, in the same statement; a posting's lines
  are unique per (rental, posting number, kind); and check constraints hold every row to the
  rounding rule. A periodic run skips the rentals whose rows another transaction holds (a rental
  being ended is settled by that transaction).
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
from app.billing.accrued import COVERED_SQL, DUE_SQL, LIVE_SQL
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
    billing runs: a second run waits, then sees the first one's postings.
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


# The periodic tick's first statement: which rentals it must price exactly. One lean pass over the
# active rentals, grouped by renter (nothing locked, nothing written, no offline history read):
# - it bounds from above what each renter owes: every second since the last posting at the full
#   price (offline spells and stop requests only take seconds away; floating point with a margin,
#   as it only has to be an upper bound). A renter whose posted balance less that bound is under a
#   minute of its dearest rental is "at risk": all its rentals are priced exactly. For every other
#   renter the balance covers all it owes, so nothing is waived and no rental needs stopping;
# - it finds the rentals whose hour mark (start + whole hours, after the last one posted) is
#   within the posting window.
# The statement also moves the tick's watermark.
_TICK_CHOICE_SQL = """
WITH watermark AS (
    INSERT INTO billing_watermark (id, ticked_until) VALUES (1, CAST(:until AS timestamptz))
    ON CONFLICT (id) DO UPDATE
    SET ticked_until = GREATEST(billing_watermark.ticked_until, EXCLUDED.ticked_until)
    RETURNING id
)
SELECT (SELECT count(*) FROM watermark) AS watermarks,
       CAST(COALESCE(SUM(g.rentals), 0) AS bigint) AS looked,
       array_agg(g.renter_id) FILTER (WHERE g.at_risk) AS risk,
       jsonb_agg(g.due) FILTER (WHERE g.due IS NOT NULL) AS due
FROM (
    SELECT s.renter_id, count(*) AS rentals,
           CAST(u.balance AS float8)
             - SUM(s.price * GREATEST(0, s.age - s.old_seconds) / 3600 + 0.0002)
             < MAX(s.price) / 60 + 0.001 AS at_risk,
           array_agg(s.rental_id) FILTER (
               WHERE s.age >= 3600 AND s.age - 3600 * floor(s.age / 3600) < :post_window
                 AND s.posted_age < 3600 * floor(s.age / 3600)) AS due
    FROM (SELECT r.id AS rental_id, r.renter_id, CAST(r.cost_per_hour AS float8) AS price,
                 date_part('epoch', CAST(:until AS timestamptz) - r.start_time) AS age,
                 COALESCE(a.billed_seconds, 0) AS old_seconds,
                 COALESCE(date_part('epoch', a.posted_until - r.start_time), 0) AS posted_age
          FROM rentals r
          LEFT JOIN rental_accruals a ON a.rental_id = r.id
          WHERE r.status = 'active' AND r.start_time IS NOT NULL) s
    JOIN users u ON u.id = s.renter_id
    GROUP BY s.renter_id, u.balance
) g
"""

# Its second statement, when there is anything to price: the chosen rentals read in full (by key).
_TICK_PICKS_SQL = (
    LIVE_SQL.format(
        where="r.status = 'active' AND (r.id = ANY(CAST(:due AS uuid[]))"
        " OR r.renter_id = ANY(CAST(:risk AS uuid[])))",
        columns=""",
           r.start_time + make_interval(hours => CAST(FLOOR(GREATEST(0, EXTRACT(EPOCH FROM
               CAST(:until AS timestamptz) - r.start_time)) / 3600) AS integer)) AS mark""",
    )
    + """,
looked AS (SELECT count(*) AS n FROM live),
chosen AS MATERIALIZED (
    SELECT l.*, l.renter_id = ANY(CAST(:risk AS uuid[])) AS at_risk, true AS writable,
           l.mark > l.start_time AND l.mark > l.posted_until
             AND l.mark > CAST(:until AS timestamptz) - make_interval(secs => :post_window) AS post
    FROM live l
)"""
)

# A settlement's choice: the rental that ends (its status may already say so), with every active
# rental of its renter beside it, so that the balance covers them in the same order as for every
# reader; only the ending rental is written.
_SETTLE_CHOICE_SQL = (
    LIVE_SQL.format(
        where="r.renter_id = CAST(:renter_id AS uuid)"
        " AND (r.status = 'active' OR r.id = CAST(:rental_id AS uuid))",
        columns=", CAST(NULL AS timestamptz) AS mark",
    )
    + """,
looked AS (SELECT count(*) AS n FROM live),
chosen AS MATERIALIZED (
    SELECT l.*, true AS at_risk, l.rental_id = CAST(:rental_id AS uuid) AS writable, true AS post
    FROM live l
)"""
)

# Then one statement prices the chosen rentals exactly, writes the postings due, and says which
# rentals must stop: lock the rental rows to be written ({skip} is "SKIP LOCKED" for the periodic
# tick, as a rental being ended is settled by its own transaction, and empty for a settlement,
# which must wait for its rental); write the accrual rows (a new rental gets its row); write the
# ledger lines; move the balances by what the written rows say.
#
# Account rows are not locked up front: only billing and payouts take money out of a balance, and
# both hold the platform account's row lock while they do (billing runs one at a time; a payout
# request takes the same lock, see app/billing/payouts.py), so the balance this statement reads
# is at most what the account holds when its UPDATE lands (a top-up committing in between only
# adds), and a renter's balance is never overdrawn. The UPDATE waits for a top-up in flight.
_POST_SQL = (
    DUE_SQL.format(source="chosen")
    + ","
    + COVERED_SQL
    + """,
split AS MATERIALIZED (
    SELECT c.*, c.old_amount + c.amount AS new_amount,
           c.old_waived + c.nominal - c.amount AS new_waived,
           -- The fee of the posted total, never falling and never above what the renter paid.
           LEAST(c.old_fee + c.amount, GREATEST(c.old_fee, ROUND((c.old_amount + c.amount)
                 * CAST(:fee_percent AS numeric) / 100, 4))) AS new_fee,
           c.renter_balance - SUM(c.amount) OVER (PARTITION BY c.renter_id) AS balance_after
    FROM covered c
),
plan AS MATERIALIZED (
    SELECT s.*,
           s.postings + CASE WHEN s.new_amount > s.old_amount THEN 1 ELSE 0 END AS new_postings,
           CASE WHEN CAST(:final AS boolean)
                THEN GREATEST(s.posted_until, CAST(:until AS timestamptz))
                WHEN s.post THEN s.mark
                ELSE s.posted_until END AS new_posted_until
    FROM split s
    -- Posted: an hour mark that has passed, the end, or seconds the balance no longer covers
    -- (an ended rental gets its row even when it ran for no whole second).
    WHERE s.writable AND (s.post OR s.amount < s.nominal)
      AND (s.new_seconds > s.old_seconds OR (CAST(:final AS boolean) AND NOT s.known))
),
locked AS MATERIALIZED (
    SELECT r.id AS rental_id FROM rentals r
    WHERE r.id IN (SELECT rental_id FROM plan)
    FOR UPDATE OF r {skip}
),
created AS (
    INSERT INTO rental_accruals (rental_id, renter_id, host_id, cost_per_hour, billed_seconds,
                                 billed_until, billed_amount, waived_amount, billed_fee,
                                 postings, posted_until)
    SELECT p.rental_id, p.renter_id, p.host_id, p.cost_per_hour, p.new_seconds,
           GREATEST(p.old_until, p.clock_end), p.new_amount, p.new_waived, p.new_fee,
           p.new_postings, p.new_posted_until
    FROM plan p
    WHERE NOT p.known AND p.rental_id IN (SELECT rental_id FROM locked)
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
        postings = p.new_postings,
        posted_until = p.new_posted_until
    FROM plan p
    -- Only a row that still holds what this run read: a run that lost a race writes nothing.
    WHERE a.rental_id = p.rental_id AND p.known
      AND p.rental_id IN (SELECT rental_id FROM locked)
      AND a.billed_seconds = p.old_seconds AND a.billed_amount = p.old_amount
      AND a.postings = p.postings
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
           v.what || ', rental ' || p.rental_id || ', seconds ' || (p.old_seconds + 1)
             || '-' || p.new_seconds
    FROM applied p
    CROSS JOIN LATERAL (VALUES
        (p.renter_id, p.new_amount - p.old_amount, 'debit', 'usage', 'GPU rental'),
        (p.host_id, (p.new_amount - p.new_fee) - (p.old_amount - p.old_fee), 'credit',
         'earning', 'Hosting earnings'),
        (CAST(:platform_id AS uuid), p.new_fee - p.old_fee, 'credit', 'fee', 'Platform fee')
    ) AS v(user_id, amount, type, kind, what)
    WHERE v.amount > 0
    RETURNING id
),
balances AS (
    UPDATE users u SET balance = u.balance + d.delta
    FROM (SELECT v.user_id, SUM(v.delta) AS delta
          FROM applied p
          CROSS JOIN LATERAL (VALUES
              (p.renter_id, -(p.new_amount - p.old_amount)),
              (p.host_id, (p.new_amount - p.new_fee) - (p.old_amount - p.old_fee)),
              (CAST(:platform_id AS uuid), p.new_fee - p.old_fee)
          ) AS v(user_id, delta)
          GROUP BY v.user_id
          HAVING SUM(v.delta) <> 0) d
    WHERE u.id = d.user_id
    RETURNING u.id
)
SELECT (SELECT n FROM looked) AS looked,
       (SELECT count(*) FROM chosen) AS priced,
       (SELECT count(*) FROM applied) AS written,
       (SELECT count(*) FROM applied WHERE new_amount > old_amount) AS charged,
       (SELECT COALESCE(SUM(new_amount - old_amount), 0) FROM applied) AS total,
       (SELECT COALESCE(SUM(new_waived - old_waived), 0) FROM applied) AS waived,
       (SELECT count(*) FROM lines) AS lines,
       (SELECT count(*) FROM balances) AS balances,
       (SELECT array_agg(rental_id ORDER BY rental_id) FROM split
        WHERE at_risk AND stop_requested_at IS NULL
          AND (amount < nominal OR balance_after < next_minute)) AS out_of_credit
"""
)

_TICK_SQL = "WITH " + _TICK_PICKS_SQL + "," + _POST_SQL
_SETTLE_SQL = "WITH " + _SETTLE_CHOICE_SQL + "," + _POST_SQL


@dataclass
class BillingRun:
    """What one billing run did (counts of rows it wrote, the amount it posted)."""

    looked: int = 0  # active rentals the run looked at (nothing locked or written for most)
    priced: int = 0  # rentals whose exact clock it worked out (posting due, or renter at risk)
    written: int = 0  # postings: accrual rows written (inserted or updated in place)
    charged: int = 0  # postings that charged the renter a positive amount
    total: Decimal = Decimal(0)  # charged in all (posted to the ledger by this run)
    waived: Decimal = Decimal(0)  # fixed as not covered by this run
    lines: int = 0  # ledger lines written
    balances: int = 0  # account rows whose balance moved
    watermarks: int = 0  # the tick's watermark row (1 for a tick, 0 for a settlement)
    to_stop: list[uuid.UUID] = field(default_factory=list)  # out of credit, not being stopped

    @property
    def postings(self) -> int:
        """Postings that wrote ledger lines."""
        return self.charged

    @property
    def rows_written(self) -> int:
        """Rows this run inserted or updated (accruals, ledger lines, balances, watermark)."""
        return self.written + self.lines + self.balances + self.watermarks


def _params(until: datetime, settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "until": until,
        "heartbeat_timeout": settings.heartbeat_timeout_seconds,
        "fee_percent": settings.platform_fee_percent,
        "post_window": 2 * settings.billing_tick_seconds,
        **extra,
    }


def _post(session: Session, sql: str, params: dict[str, Any], *, skip: str) -> BillingRun:
    row = session.execute(text(sql.format(skip=skip)), params).one()
    return BillingRun(
        looked=row.looked,
        priced=row.priced,
        written=row.written,
        charged=row.charged,
        total=Decimal(row.total),
        waived=Decimal(row.waived),
        lines=row.lines,
        balances=row.balances,
        to_stop=list(row.out_of_credit or []),
    )


def bill_active_rentals(session: Session, *, now: datetime, settings: Settings) -> BillingRun:
    """The periodic tick at `now`: post the rentals whose hour mark has just passed or whose
    renter can no longer cover what they owe, and say which rentals must stop; at most five
    statements, whatever the number of rentals.

    Rentals whose row another transaction holds (a rental being ended) are not posted: they post
    at their end, or at their next hour mark.
    """
    platform_id = platform_account_id(session)  # the billing runs' lock, first
    # The first statement hashes every live rental once: in memory, not in temporary files. JIT
    # compilation would cost seconds a minute for plans that run in a fraction of that: the
    # planner's cost estimates (the offline history of each rental) set it off otherwise.
    session.execute(
        text("SELECT set_config('work_mem', '256MB', true), set_config('jit', 'off', true)")
    )
    params = _params(now, settings, final=False, platform_id=platform_id)
    choice = session.execute(text(_TICK_CHOICE_SQL), params).one()
    due = [rental_id for group in choice.due or [] for rental_id in group]
    run = BillingRun()
    if due or choice.risk:
        # The chosen rentals are read by key: a cached lookup costs about a sequential page.
        session.execute(text("SELECT set_config('random_page_cost', '1.1', true)"))
        run = _post(
            session,
            _TICK_SQL,
            {**params, "due": due, "risk": _ids(choice.risk)},
            skip="SKIP LOCKED",
        )
    run.looked, run.watermarks = choice.looked, choice.watermarks
    return run


def _ids(values: list[uuid.UUID] | None) -> list[str]:
    return [str(v) for v in values or []]


def settle_rental(session: Session, rental: Rental, until: datetime) -> None:
    """Bill the rental up to `until` and post everything it owes: its final posting.

    Called in the transaction that ends the rental (its status may already say so). Offline time
    stays free; a renter who cannot pay is charged what the balance covers.
    """
    if rental.start_time is None:
        return
    session.flush()
    platform_id = platform_account_id(session)  # the billing runs' lock, first
    params = _params(
        until,
        get_settings(),
        final=True,
        platform_id=platform_id,
        rental_id=str(rental.id),
        renter_id=str(rental.renter_id),
    )
    _post(session, _SETTLE_SQL, params, skip="")
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
    """How far billing has looked: the oldest, among active rentals, of the later of the last
    tick's time and the rental's own watermark (None when none is active)."""
    return session.execute(
        text(
            "SELECT min(GREATEST(COALESCE(a.billed_until, r.start_time + make_interval("
            "mins => r.billed_minutes)), w.ticked_until)) FROM rentals r "
            "LEFT JOIN rental_accruals a ON a.rental_id = r.id "
            "LEFT JOIN billing_watermark w ON w.id = 1 "
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
