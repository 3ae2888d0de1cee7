"""A host's earnings by node and period, read from the posted ledger lines.

A posting's `earning` line (the host's credit) and its `fee` line (the platform's credit) belong
to one rental; the rental's node and its host (the accrual's `host_id`, or the per-minute charge's
for lines written before per-second billing) say whose earnings they are. gross = net + fee.
Periods are UTC days, ISO weeks (starting on Monday) or months; billed time that is not posted
yet is not shown (it reaches the ledger at the rental's next hourly posting or its end).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.errors import ValidationFailed
from app.pagination import decode_cursor, encode_cursor


class Every(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


# The newest `:limit` periods (before the cursor's, after `since`) in which the host earned,
# then every (period, node) of those periods.
_EARNINGS_SQL = """
WITH lines AS (
    SELECT CAST(date_trunc(:every, t.created_at AT TIME ZONE 'UTC') AS date) AS period,
           r.node_id, t.kind, t.amount
    FROM transactions t
    JOIN rentals r ON r.id = t.rental_id
    WHERE t.kind IN ('earning', 'fee') AND t.type = 'credit'
      AND t.rental_id IN (SELECT rental_id FROM rental_accruals WHERE host_id = :host
                          UNION
                          SELECT rental_id FROM billing_charges WHERE host_id = :host)
      AND (CAST(:since AS timestamptz) IS NULL OR t.created_at >= :since)
),
periods AS (
    SELECT DISTINCT period FROM lines
    WHERE CAST(:before AS date) IS NULL OR period < :before
    ORDER BY period DESC
    LIMIT :limit
)
SELECT l.period, l.node_id,
       COALESCE(SUM(l.amount) FILTER (WHERE l.kind = 'earning'), 0) AS net,
       COALESCE(SUM(l.amount) FILTER (WHERE l.kind = 'fee'), 0) AS fee
FROM lines l
WHERE l.period IN (SELECT period FROM periods)
GROUP BY l.period, l.node_id
ORDER BY l.period DESC, l.node_id
"""


def earnings(
    session: Session,
    *,
    host_id: uuid.UUID,
    every: Every,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """(rows {period, node_id, gross, fee, net}, next cursor) for at most `limit` periods."""
    decoded = decode_cursor(cursor, (str,))
    try:
        before = date.fromisoformat(decoded[0]) if decoded else None
    except ValueError:
        raise ValidationFailed(
            "The cursor is not valid.", errors={"cursor": ["Invalid cursor."]}
        ) from None
    rows = session.execute(
        text(_EARNINGS_SQL),
        {
            "every": every.value,
            "host": host_id,
            "since": since,
            "before": before,
            "limit": limit + 1,
        },
    ).all()
    periods = sorted({row.period for row in rows}, reverse=True)
    next_cursor = None
    if len(periods) > limit:
        periods = periods[:limit]
        next_cursor = encode_cursor([periods[-1].isoformat()])
    kept = set(periods)
    items = [
        {
            "period": row.period,
            "node_id": row.node_id,
            "gross": Decimal(row.net) + Decimal(row.fee),
            "fee": Decimal(row.fee),
            "net": Decimal(row.net),
        }
        for row in rows
        if row.period in kept
    ]
    return items, next_cursor
