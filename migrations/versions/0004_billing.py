"""billing: billed periods (one chain per rental), ledger line kinds and their uniqueness guards.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_charges",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("renter_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("host_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("from_minute", sa.Integer(), nullable=False),
        sa.Column("to_minute", sa.Integer(), nullable=False),
        sa.Column("after_minute", sa.Integer(),
                  sa.Computed("(NULLIF(from_minute, 0))", persisted=True), nullable=True),
        sa.Column("nominal", sa.Numeric(18, 4), nullable=False),
        sa.Column("amount", sa.Numeric(18, 4), nullable=False),
        sa.Column("fee", sa.Numeric(18, 4), nullable=False),
        sa.Column("billed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_charges"),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"],
                                name="fk_billing_charges_rental_id_rentals", ondelete="RESTRICT"),
        sa.UniqueConstraint("rental_id", "from_minute", name="uq_billing_charges_rental_from"),
        sa.UniqueConstraint("rental_id", "to_minute", name="uq_billing_charges_rental_to"),
        sa.CheckConstraint("from_minute >= 0 AND to_minute > from_minute",
                           name="ck_billing_charges_period_valid"),
        sa.CheckConstraint("nominal >= 0 AND amount >= 0 AND amount <= nominal",
                           name="ck_billing_charges_amount_valid"),
        sa.CheckConstraint("fee >= 0 AND fee <= amount", name="ck_billing_charges_fee_valid"),
    )
    # Each period must follow the previous one: no gap, no overlap, no second chain.
    op.create_foreign_key("fk_billing_charges_follows_previous", "billing_charges",
                          "billing_charges", ["rental_id", "after_minute"],
                          ["rental_id", "to_minute"], ondelete="RESTRICT")

    op.add_column("transactions", sa.Column("kind", sa.String(16), nullable=False,
                                            server_default="adjustment"))
    op.add_column("transactions", sa.Column("charge_id", postgresql.UUID(as_uuid=True),
                                            nullable=True))
    op.create_foreign_key("fk_transactions_charge_id_billing_charges", "transactions",
                          "billing_charges", ["charge_id"], ["id"], ondelete="RESTRICT")
    op.create_check_constraint(
        "ck_transactions_kind_known", "transactions",
        "kind IN ('topup', 'usage', 'earning', 'fee', 'adjustment')")
    op.create_index("uq_transactions_charge_kind", "transactions", ["charge_id", "kind"],
                    unique=True, postgresql_where=sa.text("charge_id IS NOT NULL"))
    op.create_index("uq_transactions_topup_reference", "transactions", ["reference_id"],
                    unique=True, postgresql_where=sa.text("kind = 'topup'"))


def downgrade() -> None:
    op.drop_index("uq_transactions_topup_reference", table_name="transactions",
                  postgresql_where=sa.text("kind = 'topup'"))
    op.drop_index("uq_transactions_charge_kind", table_name="transactions",
                  postgresql_where=sa.text("charge_id IS NOT NULL"))
    op.drop_constraint("ck_transactions_kind_known", "transactions", type_="check")
    op.drop_constraint("fk_transactions_charge_id_billing_charges", "transactions",
                       type_="foreignkey")
    op.drop_column("transactions", "charge_id")
    op.drop_column("transactions", "kind")
    op.drop_table("billing_charges")
