"""The executable ledger audit: every invariant of the ledger as a query that lists its breaches."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import utcnow
from app.money import quantize

_INVARIANT_QUERIES: dict[str, str] = {
    # Every account: balance = credits - debits.
    "balance_matches_ledger": """
        SELECT u.id AS user_id, u.balance, COALESCE(l.net, 0) AS ledger
        FROM users u
        LEFT JOIN (SELECT user_id, SUM(CASE WHEN type = 'credit' THEN amount ELSE -amount END)
                   AS net FROM transactions GROUP BY user_id) l ON l.user_id = u.id
        WHERE u.balance <> COALESCE(l.net, 0)
        LIMIT 100""",
    "balance_not_negative": """
        SELECT id AS user_id, balance FROM users WHERE balance < 0 LIMIT 100""",
    # Every charge: its usage debit = its earning + its fee, each equal to the charge's split.
    "charge_lines_match": """
        SELECT c.id AS charge_id, c.rental_id, c.amount, c.fee,
               COALESCE(t.usage, 0) AS usage, COALESCE(t.earning, 0) AS earning,
               COALESCE(t.fee, 0) AS fee_line
        FROM billing_charges c
        LEFT JOIN (SELECT charge_id,
                          SUM(amount) FILTER (WHERE kind = 'usage' AND type = 'debit') AS usage,
                          SUM(amount) FILTER (WHERE kind = 'earning' AND type = 'credit')
                            AS earning,
                          SUM(amount) FILTER (WHERE kind = 'fee' AND type = 'credit') AS fee
                   FROM transactions WHERE charge_id IS NOT NULL GROUP BY charge_id) t
               ON t.charge_id = c.id
        WHERE COALESCE(t.usage, 0) <> c.amount OR COALESCE(t.fee, 0) <> c.fee
           OR COALESCE(t.earning, 0) <> c.amount - c.fee
        LIMIT 100""",
    # Every rental: the watermark is the end of its last period and the sum of what it paid.
    "rental_watermark_matches_charges": """
        SELECT r.id AS rental_id, r.billed_minutes, r.billed_amount,
               COALESCE(c.minutes, 0) AS charged_minutes, COALESCE(c.amount, 0) AS charged
        FROM rentals r
        LEFT JOIN (SELECT rental_id, MAX(to_minute) AS minutes, SUM(amount) AS amount
                   FROM billing_charges GROUP BY rental_id) c ON c.rental_id = r.id
        WHERE r.billed_minutes <> COALESCE(c.minutes, 0)
           OR r.billed_amount <> COALESCE(c.amount, 0)
        LIMIT 100""",
    # Ledger lines of usage exist only as part of a charge.
    "usage_lines_have_a_charge": """
        SELECT id AS transaction_id, kind FROM transactions
        WHERE kind IN ('usage', 'earning', 'fee') AND charge_id IS NULL
        LIMIT 100""",
}

_TOTALS_SQL = """
    SELECT COALESCE(SUM(amount) FILTER (WHERE kind = 'usage' AND type = 'debit'), 0) AS usage,
           COALESCE(SUM(amount) FILTER (WHERE kind = 'earning' AND type = 'credit'), 0) AS earnings,
           COALESCE(SUM(amount) FILTER (WHERE kind = 'fee' AND type = 'credit'), 0) AS fees,
           COALESCE(SUM(amount) FILTER (WHERE kind = 'topup'), 0) AS topups,
           COALESCE(SUM(CASE WHEN type = 'credit' THEN amount ELSE -amount END), 0) AS ledger_net,
           (SELECT COALESCE(SUM(balance), 0) FROM users) AS balances
    FROM transactions
"""


def check_invariants(session: Session) -> dict[str, Any]:
    """Check the ledger's invariants; every difference found is listed (at most 100 per check)."""
    differences: list[dict[str, Any]] = []
    for name, sql in _INVARIANT_QUERIES.items():
        for row in session.execute(text(sql)).mappings():
            differences.append({"check": name, **{k: _plain(v) for k, v in row.items()}})
    totals = session.execute(text(_TOTALS_SQL)).mappings().one()
    usage_gap = totals["usage"] - totals["earnings"] - totals["fees"]
    if usage_gap != 0:
        differences.append(
            {"check": "usage_equals_earnings_plus_fees", "difference": _plain(usage_gap)}
        )
    if totals["balances"] != totals["ledger_net"]:
        differences.append(
            {
                "check": "balances_equal_ledger",
                "difference": _plain(totals["balances"] - totals["ledger_net"]),
            }
        )
    return {
        "ok": not differences,
        "checked_at": utcnow(),
        "totals": {k: _plain(v) for k, v in totals.items()},
        "differences": differences,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(quantize(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
