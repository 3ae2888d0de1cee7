"""billing per second: one running accrual row per rental, ledger lines per posting.

Carries existing data over without moving any balance: every rental that started gets an accrual
row that says what its per-minute charges billed, all of it already posted (those charges' ledger
lines stay where they are, and `billing_charges` stays as their history).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(18, 4)


def upgrade() -> None:
    op.create_table(
        "rental_accruals",
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("renter_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("host_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cost_per_hour", MONEY, nullable=False),
        sa.Column("billed_seconds", sa.BigInteger(), nullable=False),
        sa.Column("billed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("billed_amount", MONEY, nullable=False),
        sa.Column("waived_amount", MONEY, nullable=False),
        sa.Column("billed_fee", MONEY, nullable=False),
        sa.Column("posted_seconds", sa.BigInteger(), nullable=False),
        sa.Column("posted_amount", MONEY, nullable=False),
        sa.Column("posted_fee", MONEY, nullable=False),
        sa.Column("postings", sa.Integer(), nullable=False),
        sa.Column("posted_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rental_id", name="pk_rental_accruals"),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"],
                                name="fk_rental_accruals_rental_id_rentals", ondelete="RESTRICT"),
        sa.CheckConstraint("billed_seconds >= 0 AND posted_seconds >= 0",
                           name="ck_rental_accruals_seconds_valid"),
        sa.CheckConstraint("posted_seconds <= billed_seconds",
                           name="ck_rental_accruals_posted_seconds_valid"),
        sa.CheckConstraint(
            "billed_amount + waived_amount = ROUND(cost_per_hour * billed_seconds / 3600, 4)",
            name="ck_rental_accruals_amount_per_second"),
        sa.CheckConstraint(
            "billed_amount >= 0 AND waived_amount >= 0 AND billed_fee >= 0"
            " AND billed_fee <= billed_amount",
            name="ck_rental_accruals_amount_valid"),
        sa.CheckConstraint(
            "posted_amount >= 0 AND posted_fee >= 0 AND posted_fee <= posted_amount"
            " AND posted_amount <= billed_amount AND posted_fee <= billed_fee"
            " AND billed_fee - posted_fee <= billed_amount - posted_amount",
            name="ck_rental_accruals_posted_valid"),
        sa.CheckConstraint("postings >= 0", name="ck_rental_accruals_postings_valid"),
        # Updated in place every minute: room on each page keeps the updates HOT (no index churn).
        postgresql_with={"fillfactor": 50},
    )
    op.add_column("transactions", sa.Column("posting", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "ck_transactions_posting_valid", "transactions",
        "posting IS NULL OR (posting > 0 AND rental_id IS NOT NULL AND charge_id IS NULL)")
    op.create_index("uq_transactions_rental_posting_kind", "transactions",
                    ["rental_id", "posting", "kind"], unique=True,
                    postgresql_where=sa.text("posting IS NOT NULL"))

    # What the per-minute charges billed, all of it posted already: balances do not move.
    op.execute("""
        INSERT INTO rental_accruals (rental_id, renter_id, host_id, cost_per_hour,
                                     billed_seconds, billed_until, billed_amount, waived_amount,
                                     billed_fee, posted_seconds, posted_amount, posted_fee,
                                     postings, posted_until)
        SELECT r.id, r.renter_id, n.owner_id, r.cost_per_hour,
               r.billed_minutes * 60, COALESCE(c.billed_until, r.start_time), r.billed_amount,
               ROUND(r.cost_per_hour * (r.billed_minutes * 60) / 3600, 4) - r.billed_amount,
               COALESCE(c.fee, 0), r.billed_minutes * 60, r.billed_amount, COALESCE(c.fee, 0),
               0,
               r.start_time + make_interval(hours => CAST(FLOOR(EXTRACT(EPOCH FROM
                   COALESCE(c.billed_until, r.start_time) - r.start_time) / 3600) AS integer))
        FROM rentals r
        JOIN host_nodes n ON n.id = r.node_id
        LEFT JOIN (SELECT rental_id, SUM(fee) AS fee, MAX(billed_until) AS billed_until
                   FROM billing_charges GROUP BY rental_id) c ON c.rental_id = r.id
        WHERE r.start_time IS NOT NULL
    """)


def downgrade() -> None:
    # Per-second postings cannot be written back as per-minute charges: refuse rather than lose
    # money. A database that never billed per second goes down cleanly.
    op.execute("""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM transactions WHERE posting IS NOT NULL)
               OR EXISTS (SELECT 1 FROM rental_accruals
                          WHERE billed_amount <> posted_amount
                             OR billed_seconds > posted_seconds) THEN
                RAISE EXCEPTION 'per-second billing has posted or accrued money; '
                                'this revision cannot be downgraded without losing it';
            END IF;
        END $$
    """)
    op.drop_index("uq_transactions_rental_posting_kind", table_name="transactions",
                  postgresql_where=sa.text("posting IS NOT NULL"))
    op.drop_constraint("ck_transactions_posting_valid", "transactions", type_="check")
    op.drop_column("transactions", "posting")
    op.drop_table("rental_accruals")
