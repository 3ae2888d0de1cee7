"""Each node's reliability: its uptime fraction over the last 7 days, materialised for offers."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import utcnow

RELIABILITY_WINDOW = timedelta(days=7)

_RELIABILITY_SQL = text("""
WITH ev AS (
    SELECT e.node_id, e.status::text AS status, e.at, e.id
    FROM node_status_events e
    WHERE e.at >= :t0 AND e.at < :t1
    UNION ALL
    -- The status each node had when the window opened.
    SELECT n.id, last.status::text, CAST(:t0 AS timestamptz), last.id
    FROM host_nodes n
    CROSS JOIN LATERAL (
        SELECT e.status, e.id FROM node_status_events e
        WHERE e.node_id = n.id AND e.at < :t0
        ORDER BY e.at DESC, e.id DESC LIMIT 1
    ) last
),
spans AS (
    SELECT node_id, status, at,
           lead(at, 1, CAST(:t1 AS timestamptz)) OVER (PARTITION BY node_id ORDER BY at, id)
               AS until
    FROM ev
),
up AS (
    SELECT node_id,
           sum(extract(epoch FROM until - at)) FILTER (WHERE status IN ('online', 'busy')) AS up_s
    FROM spans GROUP BY node_id
)
INSERT INTO node_reliability (node_id, reliability, computed_at)
SELECT n.id,
       round(least(1, greatest(0, coalesce(up.up_s, 0)
             / greatest(extract(epoch FROM CAST(:t1 AS timestamptz)
                                          - greatest(CAST(:t0 AS timestamptz), n.created_at)), 1)
       ))::numeric, 4),
       :t1
FROM host_nodes n LEFT JOIN up ON up.node_id = n.id
ON CONFLICT (node_id) DO UPDATE
    SET reliability = excluded.reliability, computed_at = excluded.computed_at
""")


def refresh_reliability(session: Session, *, now: datetime | None = None) -> int:
    """Recompute every node's uptime fraction over the last 7 days; return the rows written.

    Up means online or busy. The denominator is the part of the window the node existed for,
    so a node registered yesterday and up since is at 1.0. Before its first recorded event a
    node counts as offline (nodes are registered offline).
    """
    t1 = now or utcnow()
    t0 = t1 - RELIABILITY_WINDOW
    result = session.execute(_RELIABILITY_SQL, {"t0": t0, "t1": t1})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
