"""hosts: self-test runs, measured specs and the unverified-listing flag, maintenance windows.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("host_nodes", sa.Column("measured_specs", postgresql.JSONB(), nullable=True))
    op.add_column(
        "host_nodes",
        sa.Column("self_test_failed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "host_nodes",
        sa.Column("list_unverified", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "node_self_tests",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("work", postgresql.JSONB(), nullable=False),
        sa.Column("expected", postgresql.JSONB(), nullable=False),
        sa.Column("detected", postgresql.JSONB(), nullable=True),
        sa.Column("measured", postgresql.JSONB(), nullable=True),
        sa.Column(
            "failures", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column("proof", postgresql.JSONB(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["host_nodes.id"],
            ondelete="CASCADE",
            name=op.f("fk_node_self_tests_node_id_host_nodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_self_tests")),
    )
    op.create_index(
        "ix_node_self_tests_node_created", "node_self_tests", ["node_id", "created_at"]
    )
    op.create_table(
        "maintenance_windows",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("began_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["host_nodes.id"],
            ondelete="CASCADE",
            name=op.f("fk_maintenance_windows_node_id_host_nodes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_windows")),
    )
    op.create_index(
        "ix_maintenance_windows_node_starts", "maintenance_windows", ["node_id", "starts_at"]
    )
    op.create_index(
        "ix_maintenance_windows_due",
        "maintenance_windows",
        ["starts_at"],
        postgresql_where=sa.text("cancelled_at IS NULL AND finished_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_maintenance_windows_due", table_name="maintenance_windows")
    op.drop_index("ix_maintenance_windows_node_starts", table_name="maintenance_windows")
    op.drop_table("maintenance_windows")
    op.drop_index("ix_node_self_tests_node_created", table_name="node_self_tests")
    op.drop_table("node_self_tests")
    op.drop_column("host_nodes", "list_unverified")
    op.drop_column("host_nodes", "self_test_failed")
    op.drop_column("host_nodes", "measured_specs")
