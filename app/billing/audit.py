"""The executable ledger audit: every invariant of the ledger as a query that lists its breaches.

Every account's stored balance is exactly its posted ledger lines; what active rentals have
accrued since their last posting is derived (app/billing/accrued.py) and must be covered by their
renters' balances. See app/billing/service.py for the rule, and app/billing/payouts.py for the
payouts' lines and accounts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.billing.accrued import negative_balances, owed_in_all
from app.billing.models import PAYOUTS_PAID_CLERK_ID, PAYOUTS_PENDING_CLERK_ID, PLATFORM_CLERK_ID
from app.db import utcnow
from app.money import quantize

_INVARIANT_QUERIES: dict[str, str] = {
    # Every account: balance = credits - debits of its ledger lines.
    "balance_matches_ledger": """
        SELECT u.id AS user_id, u.balance, COALESCE(l.net, 0) AS ledger
        FROM users u
        LEFT JOIN (SELECT user_id, SUM(CASE WHEN type = 'credit' THEN amount ELSE -amount END)
                   AS net FROM transactions GROUP BY user_id) l ON l.user_id = u.id
        WHERE u.balance <> COALESCE(l.net, 0)
        LIMIT 100""",
    "balance_not_negative": """
        SELECT id AS user_id, balance FROM users WHERE balance < 0 LIMIT 100""",
    # Every per-minute charge (history): its usage debit = its earning + its fee.
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
    # Every rental's posted bill is exactly its ledger lines (per-minute charges and postings
    # together), its postings are numbered 1..n, and the rounding rule holds.
    "accrual_matches_lines": """
        SELECT a.rental_id, a.billed_amount, a.billed_fee, a.postings,
               COALESCE(t.usage, 0) AS usage, COALESCE(t.earning, 0) AS earning,
               COALESCE(t.fee, 0) AS fee_lines, COALESCE(t.postings, 0) AS posting_numbers,
               COALESCE(t.last_posting, 0) AS last_posting
        FROM rental_accruals a
        LEFT JOIN (SELECT rental_id,
                          SUM(amount) FILTER (WHERE kind = 'usage' AND type = 'debit') AS usage,
                          SUM(amount) FILTER (WHERE kind = 'earning' AND type = 'credit')
                            AS earning,
                          SUM(amount) FILTER (WHERE kind = 'fee' AND type = 'credit') AS fee,
                          COUNT(DISTINCT posting) AS postings, MAX(posting) AS last_posting
                   FROM transactions WHERE kind IN ('usage', 'earning', 'fee')
                   GROUP BY rental_id) t ON t.rental_id = a.rental_id
        WHERE COALESCE(t.usage, 0) <> a.billed_amount OR COALESCE(t.fee, 0) <> a.billed_fee
           OR COALESCE(t.earning, 0) <> a.billed_amount - a.billed_fee
           OR COALESCE(t.postings, 0) <> a.postings OR COALESCE(t.last_posting, 0) <> a.postings
           OR a.billed_amount + a.waived_amount
              <> ROUND(a.cost_per_hour * a.billed_seconds / 3600, 4)
        LIMIT 100""",
    # A rental that ended keeps its settled amount on its row.
    "ended_rentals_posted": """
        SELECT r.id AS rental_id, r.status, r.billed_amount, a.billed_amount AS posted
        FROM rentals r JOIN rental_accruals a ON a.rental_id = r.id
        WHERE r.status <> 'active' AND r.billed_amount <> a.billed_amount
        LIMIT 100""",
    # Every rental that started and paid something has its posted bill.
    "billed_rentals_have_an_accrual": """
        SELECT r.id AS rental_id, r.billed_amount FROM rentals r
        WHERE r.billed_amount > 0
          AND NOT EXISTS (SELECT 1 FROM rental_accruals a WHERE a.rental_id = r.id)
        LIMIT 100""",
    # Ledger lines of usage exist only as part of a charge or a posting.
    "usage_lines_have_a_charge_or_posting": """
        SELECT id AS transaction_id, kind FROM transactions
        WHERE kind IN ('usage', 'earning', 'fee') AND charge_id IS NULL AND posting IS NULL
        LIMIT 100""",
}

# The payouts' checks (revision 0013 on; a database migrated only so far skips them).
_PAYOUT_QUERIES: dict[str, str] = {
    # The payouts-pending account holds exactly the requested payouts, and the payouts-paid
    # account exactly the approved ones.
    "payouts_pending_matches_requested": """
        SELECT c.pending_balance, c.requested FROM (
            SELECT COALESCE((SELECT balance FROM users WHERE clerk_id = :pending), 0)
                     AS pending_balance,
                   COALESCE((SELECT SUM(amount) FROM payouts WHERE status = 'requested'), 0)
                     AS requested) c
        WHERE c.pending_balance <> c.requested""",
    "payouts_paid_matches_approved": """
        SELECT c.paid_balance, c.approved FROM (
            SELECT COALESCE((SELECT balance FROM users WHERE clerk_id = :paid), 0)
                     AS paid_balance,
                   COALESCE((SELECT SUM(amount) FROM payouts WHERE status = 'approved'), 0)
                     AS approved) c
        WHERE c.paid_balance <> c.approved""",
    # Every payout's lines are the steps its state says, each a debit and a credit of its exact
    # amount between the right accounts, and nothing else.
    "payout_lines_match_state": """
        SELECT p.id AS payout_id, p.status, p.amount,
               COALESCE(t.requested_debit, 0) AS requested_debit,
               COALESCE(t.requested_credit, 0) AS requested_credit,
               COALESCE(t.returned_debit, 0) AS returned_debit,
               COALESCE(t.returned_credit, 0) AS returned_credit,
               COALESCE(t.paid_debit, 0) AS paid_debit,
               COALESCE(t.paid_credit, 0) AS paid_credit,
               COALESCE(t.lines, 0) AS lines
        FROM payouts p
        LEFT JOIN LATERAL (
            SELECT SUM(x.amount) FILTER (WHERE x.kind = 'payout' AND x.type = 'debit'
                                           AND x.user_id = p.user_id) AS requested_debit,
                   SUM(x.amount) FILTER (WHERE x.kind = 'payout' AND x.type = 'credit'
                                           AND x.user_id = pe.id) AS requested_credit,
                   SUM(x.amount) FILTER (WHERE x.kind = 'payout_return' AND x.type = 'debit'
                                           AND x.user_id = pe.id) AS returned_debit,
                   SUM(x.amount) FILTER (WHERE x.kind = 'payout_return' AND x.type = 'credit'
                                           AND x.user_id = p.user_id) AS returned_credit,
                   SUM(x.amount) FILTER (WHERE x.kind = 'payout_paid' AND x.type = 'debit'
                                           AND x.user_id = pe.id) AS paid_debit,
                   SUM(x.amount) FILTER (WHERE x.kind = 'payout_paid' AND x.type = 'credit'
                                           AND x.user_id = pa.id) AS paid_credit,
                   COUNT(*) AS lines
            FROM transactions x
            LEFT JOIN users pe ON pe.clerk_id = :pending
            LEFT JOIN users pa ON pa.clerk_id = :paid
            WHERE x.payout_id = p.id) t ON true
        WHERE COALESCE(t.requested_debit, 0) <> p.amount
           OR COALESCE(t.requested_credit, 0) <> p.amount
           OR COALESCE(t.returned_debit, 0)
              <> CASE WHEN p.status = 'rejected' THEN p.amount ELSE 0 END
           OR COALESCE(t.returned_credit, 0)
              <> CASE WHEN p.status = 'rejected' THEN p.amount ELSE 0 END
           OR COALESCE(t.paid_debit, 0)
              <> CASE WHEN p.status = 'approved' THEN p.amount ELSE 0 END
           OR COALESCE(t.paid_credit, 0)
              <> CASE WHEN p.status = 'approved' THEN p.amount ELSE 0 END
           OR COALESCE(t.lines, 0) <> CASE WHEN p.status = 'requested' THEN 2 ELSE 4 END
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


_ACCOUNTS = {
    "platform": PLATFORM_CLERK_ID,
    "pending": PAYOUTS_PENDING_CLERK_ID,
    "paid": PAYOUTS_PAID_CLERK_ID,
}


_PAYOUT_TOTALS_SQL = """
    SELECT COALESCE(SUM(amount) FILTER (WHERE status = 'requested'), 0) AS payouts_requested,
           COALESCE(SUM(amount) FILTER (WHERE status = 'approved'), 0) AS payouts_approved,
           COALESCE(SUM(amount) FILTER (WHERE status = 'rejected'), 0) AS payouts_rejected
    FROM payouts
"""


def check_invariants(session: Session) -> dict[str, Any]:
    """Check the ledger's invariants; every difference found is listed (at most 100 per check)."""
    differences: list[dict[str, Any]] = []
    has_payouts = session.execute(text("SELECT to_regclass('payouts') IS NOT NULL")).scalar()
    queries = {**_INVARIANT_QUERIES, **(_PAYOUT_QUERIES if has_payouts else {})}
    for name, sql in queries.items():
        for row in session.execute(text(sql), _ACCOUNTS).mappings():
            differences.append({"check": name, **{k: _plain(v) for k, v in row.items()}})
    # Every balance as the users see it (posted, less what their rentals owe now) is not negative.
    for user_id, balance in negative_balances(session):
        differences.append(
            {
                "check": "balance_seen_not_negative",
                "user_id": str(user_id),
                "balance": _plain(balance),
            }
        )
    totals = dict(session.execute(text(_TOTALS_SQL)).mappings().one())
    # What active rentals owe now (covered by their renters' balances) and what those balances
    # could not cover (waived at the next posting).
    totals["unposted_usage"], totals["uncovered_usage"] = owed_in_all(session)
    if has_payouts:
        totals.update(session.execute(text(_PAYOUT_TOTALS_SQL)).mappings().one())
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
