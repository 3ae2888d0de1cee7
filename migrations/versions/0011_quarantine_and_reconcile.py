"""fleet and proxy: a node whose agent must reconcile, ports quarantined while a container may run.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "host_nodes",
        sa.Column("needs_reconcile", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "port_allocations",
        sa.Column("quarantined_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_port_allocations_quarantined",
        "port_allocations",
        ["node_id", "quarantined_until"],
        postgresql_where=sa.text("released_at IS NULL AND quarantined_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_port_allocations_quarantined", table_name="port_allocations")
    op.drop_column("port_allocations", "quarantined_until")
    op.drop_column("host_nodes", "needs_reconcile")
