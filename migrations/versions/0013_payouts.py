"""payouts: hosts' payout requests and their ledger lines.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD_KINDS = "kind IN ('topup', 'usage', 'earning', 'fee', 'adjustment')"
NEW_KINDS = (
    "kind IN ('topup', 'usage', 'earning', 'fee', 'adjustment', 'payout',"
    " 'payout_return', 'payout_paid')"
)


def upgrade() -> None:
    op.create_table(
        "payouts",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("amount", sa.Numeric(18, 4), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_payouts"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_payouts_user_id_users", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.id"], name="fk_payouts_decided_by_users", ondelete="RESTRICT"
        ),
        sa.CheckConstraint("amount > 0", name="ck_payouts_amount_positive"),
        sa.CheckConstraint(
            "status IN ('requested', 'approved', 'rejected')", name="ck_payouts_status_known"
        ),
        sa.CheckConstraint(
            "(status = 'requested') = (decided_at IS NULL)",
            name="ck_payouts_decided_when_not_requested",
        ),
        sa.CheckConstraint(
            "status <> 'rejected' OR reason IS NOT NULL", name="ck_payouts_rejection_has_reason"
        ),
    )
    op.create_index("ix_payouts_user_created", "payouts", ["user_id", "created_at", "id"])
    op.create_index(
        "ix_payouts_requested",
        "payouts",
        ["created_at", "id"],
        postgresql_where=sa.text("status = 'requested'"),
    )
    op.add_column(
        "transactions", sa.Column("payout_id", postgresql.UUID(as_uuid=True), nullable=True)
    )
    op.create_foreign_key(
        "fk_transactions_payout_id_payouts",
        "transactions",
        "payouts",
        ["payout_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.drop_constraint("ck_transactions_kind_known", "transactions", type_="check")
    op.create_check_constraint("ck_transactions_kind_known", "transactions", NEW_KINDS)
    op.create_check_constraint(
        "ck_transactions_payout_lines_valid",
        "transactions",
        "(payout_id IS NOT NULL) = (kind IN ('payout', 'payout_return', 'payout_paid'))",
    )
    op.create_index(
        "uq_transactions_payout_kind_type",
        "transactions",
        ["payout_id", "kind", "type"],
        unique=True,
        postgresql_where=sa.text("payout_id IS NOT NULL"),
    )


def downgrade() -> None:
    # Payout lines move balances: dropping them would break balance = credits - debits.
    op.execute("""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM payouts) THEN
                RAISE EXCEPTION 'payouts exist; this revision cannot be downgraded without '
                                'losing their ledger lines';
            END IF;
        END $$
    """)
    op.drop_index(
        "uq_transactions_payout_kind_type",
        table_name="transactions",
        postgresql_where=sa.text("payout_id IS NOT NULL"),
    )
    op.drop_constraint("ck_transactions_payout_lines_valid", "transactions", type_="check")
    op.drop_constraint("ck_transactions_kind_known", "transactions", type_="check")
    op.create_check_constraint("ck_transactions_kind_known", "transactions", OLD_KINDS)
    op.drop_constraint("fk_transactions_payout_id_payouts", "transactions", type_="foreignkey")
    op.drop_column("transactions", "payout_id")
    op.drop_index("ix_payouts_requested", table_name="payouts")
    op.drop_index("ix_payouts_user_created", table_name="payouts")
    op.drop_table("payouts")
