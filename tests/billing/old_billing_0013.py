"""The billing run as revision 0013 ran it (app/billing/service.py at that revision), verbatim:
it fills a database the way the old code did, for the test of the revision that follows it.

Balances moved with every run; each rental's accrual row kept running totals (`billed_*`) and
the share of them its ledger lines held (`posted_*`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection

OLD_BILL_SQL = """
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


def old_run(
    conn: Connection,
    *,
    until: datetime,
    final: bool = False,
    rental_id: object = None,
    heartbeat_timeout: int = 20,
    fee_percent: Decimal = Decimal(10),
) -> list:
    """One old billing run: the tick over every active rental, or one rental's settlement."""
    platform_id = conn.execute(
        text(
            "INSERT INTO users (id, clerk_id, balance) VALUES (gen_random_uuid(), "
            "'system:platform', 0) ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = "
            "EXCLUDED.clerk_id RETURNING id"
        )
    ).scalar_one()
    if rental_id is None:
        where, skip, params = "r.status = 'active'", "SKIP LOCKED", {}
    else:
        where, skip, params = "r.id = CAST(:rental_id AS uuid)", "", {"rental_id": str(rental_id)}
    row = conn.execute(
        text(OLD_BILL_SQL.format(where=where, skip=skip)),
        {
            "until": until,
            "heartbeat_timeout": heartbeat_timeout,
            "fee_percent": fee_percent,
            "platform_id": platform_id,
            "final": final,
            **params,
        },
    ).one()
    return list(row.out_of_credit or [])
