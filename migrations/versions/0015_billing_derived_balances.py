"""billing derived balances: accrual rows hold what is posted; balances are posted + derived.

Before, the tick moved every renter's, host's and the platform's balance each minute and kept a
billed-but-not-posted share in each rental's accrual row (`posted_*` said how much of the running
totals the ledger held). Now `users.balance` is what is posted, and what a rental accrued since its
last posting is derived from its clock when read. So this revision posts every accrual's unposted
share: it writes the ledger lines the next posting would have written (a `usage` debit, an
`earning` credit and a `fee` credit, as posting number postings + 1), which the balances already
hold. No balance moves: every account's balance equals its ledger lines afterwards, and the
accrual rows need no `posted_*` columns any more. The hour marks (`posted_until`) stay, so the
next hourly postings come at each rental's own mark, spread over the hour.

It also adds `billing_watermark`, the time up to which the last tick looked at every active
rental, set to the latest tick the accrual rows show.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(18, 4)


def upgrade() -> None:
    # The platform account exists wherever a fee was ever billed; a fresh database has none and
    # nothing to post.
    op.execute("""
        WITH platform AS (
            SELECT id FROM users WHERE clerk_id = 'system:platform'
        ), due AS (
            SELECT a.*, a.postings + 1 AS posting FROM rental_accruals a
            WHERE a.billed_amount <> a.posted_amount
        )
        INSERT INTO transactions (id, user_id, amount, type, kind, reference_id, rental_id, posting,
                                  description)
        SELECT gen_random_uuid(), v.user_id, v.amount, CAST(v.type AS transaction_type), v.kind,
               CONCAT('rental:', d.rental_id, '/posting-', d.posting), d.rental_id, d.posting,
               v.what || ', rental ' || d.rental_id || ', seconds ' || (d.posted_seconds + 1)
                 || '-' || d.billed_seconds
        FROM due d
        CROSS JOIN LATERAL (VALUES
            (d.renter_id, d.billed_amount - d.posted_amount, 'debit', 'usage', 'GPU rental'),
            (d.host_id, (d.billed_amount - d.billed_fee) - (d.posted_amount - d.posted_fee),
             'credit', 'earning', 'Hosting earnings'),
            ((SELECT id FROM platform), d.billed_fee - d.posted_fee, 'credit', 'fee',
             'Platform fee')
        ) AS v(user_id, amount, type, kind, what)
        WHERE v.amount > 0
    """)
    op.execute("""
        UPDATE rental_accruals
        SET postings = postings + 1, posted_seconds = billed_seconds,
            posted_amount = billed_amount, posted_fee = billed_fee
        WHERE billed_amount <> posted_amount
    """)
    # Seconds billed but paying nothing (a zero or waived amount) were never posted as lines.
    op.execute("""
        UPDATE rental_accruals
        SET posted_seconds = billed_seconds, posted_fee = billed_fee
        WHERE posted_seconds <> billed_seconds OR posted_fee <> billed_fee
    """)
    op.drop_constraint("ck_rental_accruals_posted_valid", "rental_accruals", type_="check")
    op.drop_constraint("ck_rental_accruals_posted_seconds_valid", "rental_accruals", type_="check")
    op.drop_constraint("ck_rental_accruals_seconds_valid", "rental_accruals", type_="check")
    op.drop_column("rental_accruals", "posted_seconds")
    op.drop_column("rental_accruals", "posted_amount")
    op.drop_column("rental_accruals", "posted_fee")
    op.create_check_constraint(
        "ck_rental_accruals_seconds_valid", "rental_accruals", "billed_seconds >= 0"
    )

    op.create_table(
        "billing_watermark",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticked_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_watermark"),
        sa.CheckConstraint("id = 1", name="ck_billing_watermark_single_row"),
    )
    op.execute("""
        INSERT INTO billing_watermark (id, ticked_until)
        SELECT 1, max(a.billed_until) FROM rental_accruals a
        JOIN rentals r ON r.id = a.rental_id AND r.status = 'active'
        HAVING max(a.billed_until) IS NOT NULL
    """)


def downgrade() -> None:
    # Everything is posted, so the old running totals are the posted figures; the old tick bills
    # from there on. Nothing is lost.
    op.drop_table("billing_watermark")
    op.drop_constraint("ck_rental_accruals_seconds_valid", "rental_accruals", type_="check")
    op.add_column("rental_accruals", sa.Column("posted_seconds", sa.BigInteger(), nullable=True))
    op.add_column("rental_accruals", sa.Column("posted_amount", MONEY, nullable=True))
    op.add_column("rental_accruals", sa.Column("posted_fee", MONEY, nullable=True))
    op.execute("""
        UPDATE rental_accruals
        SET posted_seconds = billed_seconds, posted_amount = billed_amount, posted_fee = billed_fee
    """)
    for column in ("posted_seconds", "posted_amount", "posted_fee"):
        op.alter_column("rental_accruals", column, nullable=False)
    op.create_check_constraint(
        "ck_rental_accruals_seconds_valid",
        "rental_accruals",
        "billed_seconds >= 0 AND posted_seconds >= 0",
    )
    op.create_check_constraint(
        "ck_rental_accruals_posted_seconds_valid",
        "rental_accruals",
        "posted_seconds <= billed_seconds",
    )
    op.create_check_constraint(
        "ck_rental_accruals_posted_valid",
        "rental_accruals",
        "posted_amount >= 0 AND posted_fee >= 0 AND posted_fee <= posted_amount"
        " AND posted_amount <= billed_amount AND posted_fee <= billed_fee"
        " AND billed_fee - posted_fee <= billed_amount - posted_amount",
    )
