"""rentals: launch options (entrypoint, onstart, ssh_keys, sealed registry_auth, labels), phase
and progress, failure_code, and the final logs a rental's container leaves.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PHASES = "phase IN ('queued', 'pulling', 'starting', 'running', 'stopping', 'ended')"


def upgrade() -> None:
    op.add_column("rentals", sa.Column("entrypoint", postgresql.JSONB(), nullable=True))
    op.add_column("rentals", sa.Column("onstart", sa.Text(), nullable=True))
    op.add_column(
        "rentals",
        sa.Column(
            "ssh_keys", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
    )
    op.add_column(
        "rentals",
        sa.Column(
            "labels", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
    )
    op.add_column("rentals", sa.Column("registry_auth_sealed", sa.Text(), nullable=True))
    op.add_column(
        "rentals", sa.Column("phase", sa.String(16), nullable=False, server_default="queued")
    )
    op.add_column("rentals", sa.Column("progress", sa.Float(), nullable=True))
    op.add_column(
        "rentals", sa.Column("last_progress_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("rentals", sa.Column("failure_code", sa.String(32), nullable=True))
    # Rentals made before phases existed: where they are now.
    op.execute(
        "UPDATE rentals SET phase = CASE status "
        "WHEN 'active' THEN (CASE WHEN stop_requested_at IS NULL THEN 'running' ELSE 'stopping' END) "
        "WHEN 'pending' THEN 'queued' ELSE 'ended' END"
    )
    op.create_check_constraint(op.f("ck_rentals_phase_known"), "rentals", PHASES)
    op.create_index(
        "ix_rentals_labels",
        "rentals",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
    )
    op.create_table(
        "rental_final_logs",
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.ForeignKeyConstraint(
            ["rental_id"],
            ["rentals.id"],
            ondelete="CASCADE",
            name=op.f("fk_rental_final_logs_rental_id_rentals"),
        ),
        sa.PrimaryKeyConstraint("rental_id", "seq", name=op.f("pk_rental_final_logs")),
    )


def downgrade() -> None:
    op.drop_table("rental_final_logs")
    op.drop_index("ix_rentals_labels", table_name="rentals")
    op.drop_constraint(op.f("ck_rentals_phase_known"), "rentals", type_="check")
    for column in (
        "failure_code",
        "last_progress_at",
        "progress",
        "phase",
        "registry_auth_sealed",
        "labels",
        "ssh_keys",
        "onstart",
        "entrypoint",
    ):
        op.drop_column("rentals", column)
