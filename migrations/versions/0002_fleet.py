"""Fleet: an index for the liveness sweep (nodes by status and last heartbeat).

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_host_nodes_status_last_seen_at", "host_nodes",
                    ["status", "last_seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_host_nodes_status_last_seen_at", table_name="host_nodes")
