"""What live rentals have accrued since their last posting, and the balances derived from it.

This is the one place a balance is worked out. `users.balance` holds what is *posted* (every
account's balance = credits - debits of its ledger lines). A renter also owes what its active
rentals have accrued since their last posting: their billable clocks at `now`, priced per second
(app/billing/service.py has the rule), and covered by the posted balance oldest rental first, so a
balance never shows below zero. So a user's balance, as every reader sees it, is

    users.balance - the covered, unposted accrual of the user's active rentals as renter

(a host's earnings that are not posted yet are *not* in it: they count once posted, at the
rental's next hourly posting or its end; app/billing/payouts.py holds back recent ones too).

Nothing here writes. The billing run (app/billing/service.py) builds its statement from the same
SQL pieces, so the tick's stop-at-zero check and what readers see cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import utcnow
from app.money import quantize

# Every rental that {where} selects, with its posted figures (zeros before its first posting)
# and where its billable clock stands at :until: the node's last heartbeat while it is offline,
# the moment a stop was asked for (the wait for the agent is free), else :until. {columns} adds
# columns; {lock} may lock the rental rows.
LIVE_SQL = """
live AS MATERIALIZED (
    SELECT r.id AS rental_id, r.renter_id, COALESCE(a.host_id, n.owner_id) AS host_id,
           r.node_id, COALESCE(a.cost_per_hour, r.cost_per_hour) AS cost_per_hour, r.start_time,
           r.stop_requested_at, ur.balance AS renter_balance, a.rental_id IS NOT NULL AS known,
           COALESCE(a.billed_seconds, 0) AS old_seconds,
           COALESCE(a.billed_until, r.start_time) AS old_until,
           COALESCE(a.billed_amount, 0) AS old_amount,
           COALESCE(a.waived_amount, 0) AS old_waived,
           COALESCE(a.billed_fee, 0) AS old_fee,
           COALESCE(a.postings, 0) AS postings,
           COALESCE(a.posted_until, r.start_time) AS posted_until,
           LEAST(CASE WHEN n.status = 'offline'
                      THEN LEAST(CAST(:until AS timestamptz),
                                 GREATEST(r.start_time, COALESCE(n.last_seen_at, r.start_time)))
                      ELSE CAST(:until AS timestamptz) END,
                 GREATEST(r.start_time, COALESCE(r.stop_requested_at, 'infinity'))) AS clock_end
           {columns}
    FROM rentals r
    JOIN host_nodes n ON n.id = r.node_id
    LEFT JOIN rental_accruals a ON a.rental_id = r.id
    JOIN users ur ON ur.id = r.renter_id
    WHERE r.start_time IS NOT NULL AND {where}
)"""

# The exact whole seconds of each {source} rental's billable clock: from its start to where the
# clock stands, less the offline spells that have ended (each from the `offline` event less the
# heartbeat timeout, or the previous event if later, to the next event), never less than what is
# posted (the clock never goes back on posted seconds).
DUE_SQL = """
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
                         AND e.at > l.start_time AND e.at < l.clock_end + make_interval(
                             secs => :heartbeat_timeout)
                   ) g), 0))) AS bigint)) AS new_seconds
    FROM {source} l
)"""

# What the seconds since the last posting cost (`nominal`) and what the renter's posted balance
# covers of it (`amount`): a renter's rentals are covered oldest first, and what the balance cannot
# cover is not charged. `next_minute` is what the next 60 seconds would cost.
COVERED_SQL = """
priced AS (
    SELECT d.*,
           ROUND(d.cost_per_hour * d.new_seconds / 3600, 4) - d.old_amount - d.old_waived
             AS nominal,
           ROUND(d.cost_per_hour * (d.new_seconds + 60) / 3600, 4)
             - ROUND(d.cost_per_hour * d.new_seconds / 3600, 4) AS next_minute
    FROM due d
),
covered AS (
    SELECT p.*, LEAST(p.nominal, GREATEST(0, p.renter_balance - COALESCE(SUM(p.nominal) OVER (
               PARTITION BY p.renter_id ORDER BY p.start_time, p.rental_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS amount
    FROM priced p
)"""


def accrued_sql(where: str, select: str) -> str:
    """A statement over the active rentals `where` selects, ending with `select` (from covered)."""
    return (
        "WITH "
        + LIVE_SQL.format(columns="", where=f"r.status = 'active' AND ({where})")
        + ","
        + DUE_SQL.format(source="live")
        + ","
        + COVERED_SQL
        + "\n"
        + select
    )


_BALANCES_SQL = f"""
{
    accrued_sql(
        "r.renter_id = ANY(CAST(:users AS uuid[]))",
        "SELECT renter_id, SUM(amount) AS owed FROM covered GROUP BY renter_id",
    )
}
"""
# Users' posted balances less what they owe, read in one statement (one snapshot).
_DERIVED_SQL = f"""
WITH owed AS ({_BALANCES_SQL})
SELECT u.id, u.balance - COALESCE(o.owed, 0) AS balance
FROM users u LEFT JOIN owed o ON o.renter_id = u.id
WHERE u.id = ANY(CAST(:users AS uuid[]))
"""

_COSTS_SQL = accrued_sql(
    "r.renter_id = CAST(:renter AS uuid)",
    "SELECT rental_id, old_amount + amount AS cost FROM covered",
)

_OWED_TOTAL_SQL = accrued_sql(
    "true",
    "SELECT COALESCE(SUM(amount), 0) AS owed, COALESCE(SUM(nominal - amount), 0) AS uncovered "
    "FROM covered",
)


_NEGATIVE_SQL = accrued_sql(
    "true",
    "SELECT renter_id, MAX(renter_balance) - SUM(amount) AS balance FROM covered "
    "GROUP BY renter_id HAVING MAX(renter_balance) - SUM(amount) < 0 LIMIT 100",
)


def _params(now: datetime | None) -> dict[str, object]:
    return {
        "until": now or utcnow(),
        "heartbeat_timeout": get_settings().heartbeat_timeout_seconds,
    }


def balances(
    session: Session, user_ids: Iterable[uuid.UUID], *, now: datetime | None = None
) -> dict[uuid.UUID, Decimal]:
    """Each user's balance at `now` (default: now): posted, less what its rentals owe."""
    ids = [str(i) for i in dict.fromkeys(user_ids)]
    if not ids:
        return {}
    rows = session.execute(text(_DERIVED_SQL), {"users": ids, **_params(now)}).all()
    return {row.id: quantize(Decimal(row.balance)) for row in rows}


def balance_of(session: Session, user_id: uuid.UUID, *, now: datetime | None = None) -> Decimal:
    """The user's balance at `now` (default: now); zero for an unknown user."""
    return balances(session, [user_id], now=now).get(user_id, Decimal(0))


def rental_costs(
    session: Session, *, renter_id: uuid.UUID, now: datetime | None = None
) -> dict[uuid.UUID, Decimal]:
    """What each active rental of the renter has cost until `now`: posted plus covered accrual."""
    rows = session.execute(text(_COSTS_SQL), {"renter": str(renter_id), **_params(now)}).all()
    return {row.rental_id: quantize(Decimal(row.cost)) for row in rows}


def negative_balances(
    session: Session, *, now: datetime | None = None
) -> list[tuple[uuid.UUID, Decimal]]:
    """The renters whose balance at `now` would be below zero (none, when the coverage holds)."""
    session.execute(text("SET LOCAL jit = off"))
    rows = session.execute(text(_NEGATIVE_SQL), _params(now)).all()
    return [(row.renter_id, Decimal(row.balance)) for row in rows]


def owed_in_all(session: Session, *, now: datetime | None = None) -> tuple[Decimal, Decimal]:
    """(what every active rental owes at `now`, what their renters' balances do not cover)."""
    # Over every active rental the planner's estimate would set off JIT compilation, which costs
    # more than the query (see bill_active_rentals).
    session.execute(text("SET LOCAL jit = off"))
    row = session.execute(text(_OWED_TOTAL_SQL), _params(now)).one()
    return quantize(Decimal(row.owed)), quantize(Decimal(row.uncovered))
