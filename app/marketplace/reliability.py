"""Each node's reliability: its uptime fraction over the last 7 days, materialised for offers.

The formula (published in docs/hosts.md), over the window [t0, t1) of RELIABILITY_WINDOW:

    tracked  = the part of the window since the node was registered, less announced maintenance
    online   = the time in `online` or `busy` within `tracked`
    score    = online / tracked (1 when nothing is tracked yet), rounded to 4 places

The status history (node_status_events) gives each status span; a node counts as offline
before its first recorded event (nodes are registered offline). Announced maintenance windows
(not cancelled; up to when they were cancelled or ended) are taken out of both sides, so a host
loses nothing for maintenance it announced. A node younger than the window is `fresh`: its
score covers only the time since it was registered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import utcnow

RELIABILITY_WINDOW = timedelta(days=7)

# Per node: online_s and tracked_s over [t0, t1), announced maintenance taken out of both.
# :node_id limits it to one node (NULL: every node).
_INPUTS = """
WITH nodes AS (
    SELECT n.id, greatest(CAST(:t0 AS timestamptz), n.created_at) AS since
    FROM host_nodes n
    WHERE CAST(:node_id AS uuid) IS NULL OR n.id = CAST(:node_id AS uuid)
),
ev AS (
    SELECT e.node_id, e.status::text AS status, e.at, e.id
    FROM node_status_events e JOIN nodes ON nodes.id = e.node_id
    WHERE e.at >= :t0 AND e.at < :t1
    UNION ALL
    -- The status each node had when the window opened.
    SELECT nodes.id, last.status::text, CAST(:t0 AS timestamptz), last.id
    FROM nodes
    CROSS JOIN LATERAL (
        SELECT e.status, e.id FROM node_status_events e
        WHERE e.node_id = nodes.id AND e.at < :t0
        ORDER BY e.at DESC, e.id DESC LIMIT 1
    ) last
),
spans AS (
    SELECT node_id, status, at,
           lead(at, 1, CAST(:t1 AS timestamptz)) OVER (PARTITION BY node_id ORDER BY at, id)
               AS until
    FROM ev
),
-- Announced maintenance, as it really lasted: to its cancellation or early end when earlier.
win AS (
    SELECT w.node_id, w.starts_at AS s,
           least(w.ends_at, coalesce(w.finished_at, w.ends_at)) AS e
    FROM maintenance_windows w JOIN nodes ON nodes.id = w.node_id
    WHERE (w.cancelled_at IS NULL OR w.began_at IS NOT NULL)
      AND w.starts_at < :t1 AND w.ends_at > :t0
),
up AS (
    SELECT s.node_id,
           sum(extract(epoch FROM s.until - s.at) - coalesce((
               SELECT sum(extract(epoch FROM least(s.until, w.e) - greatest(s.at, w.s)))
               FROM win w WHERE w.node_id = s.node_id AND w.s < s.until AND w.e > s.at
           ), 0)) AS up_s
    FROM spans s WHERE s.status IN ('online', 'busy')
    GROUP BY s.node_id
),
announced AS (
    SELECT nodes.id AS node_id,
           sum(greatest(0, extract(epoch FROM least(w.e, CAST(:t1 AS timestamptz))
                                        - greatest(w.s, nodes.since)))) AS off_s
    FROM nodes JOIN win w ON w.node_id = nodes.id
    GROUP BY nodes.id
),
inputs AS (
    SELECT nodes.id AS node_id, nodes.since,
           greatest(0, coalesce(up.up_s, 0)) AS online_s,
           greatest(0, extract(epoch FROM CAST(:t1 AS timestamptz) - nodes.since)
                       - coalesce(announced.off_s, 0)) AS tracked_s,
           coalesce(announced.off_s, 0) AS maintenance_s
    FROM nodes
    LEFT JOIN up ON up.node_id = nodes.id
    LEFT JOIN announced ON announced.node_id = nodes.id
)
"""
_SCORE = "round(least(1, greatest(0, online_s / greatest(tracked_s, 1)))::numeric, 4)"

_REFRESH_SQL = text(
    _INPUTS
    + f"""
INSERT INTO node_reliability (node_id, reliability, computed_at)
SELECT node_id, {_SCORE}, :t1 FROM inputs
ON CONFLICT (node_id) DO UPDATE
    SET reliability = excluded.reliability, computed_at = excluded.computed_at
"""
)
_ONE_SQL = text(_INPUTS + f"SELECT {_SCORE}, online_s, tracked_s, maintenance_s, since FROM inputs")


@dataclass(frozen=True)
class ReliabilityInputs:
    score: float
    window_days: int
    online_seconds: int
    tracked_seconds: int
    maintenance_seconds: int
    fresh: bool  # registered less than one window ago: the score covers a shorter time
    computed_at: datetime


def refresh_reliability(session: Session, *, now: datetime | None = None) -> int:
    """Recompute every node's uptime fraction over the last 7 days; return the rows written."""
    t1 = now or utcnow()
    t0 = t1 - RELIABILITY_WINDOW
    result = session.execute(_REFRESH_SQL, {"t0": t0, "t1": t1, "node_id": None})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reliability_inputs(
    session: Session, *, node_id: uuid.UUID, now: datetime | None = None
) -> ReliabilityInputs | None:
    """The same formula for one node now, with its inputs (GET /nodes/{id})."""
    t1 = now or utcnow()
    t0 = t1 - RELIABILITY_WINDOW
    row = session.execute(_ONE_SQL, {"t0": t0, "t1": t1, "node_id": str(node_id)}).first()
    if row is None:
        return None
    score, online, tracked, maintenance, since = row
    return ReliabilityInputs(
        score=float(score),
        window_days=RELIABILITY_WINDOW.days,
        online_seconds=int(online),
        tracked_seconds=int(tracked),
        maintenance_seconds=int(maintenance),
        fresh=since > t0,
        computed_at=t1,
    )
