"""ops: the audit trail of operators' dead-letter actions.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ops_audit_events",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("admin_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("admin_clerk_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column(
            "detail", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "action IN ('requeue', 'discard', 'requeue_all', 'discard_all')",
            name=op.f("ck_ops_audit_events_action_known"),
        ),
        sa.CheckConstraint("count >= 0", name=op.f("ck_ops_audit_events_count_non_negative")),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["users.id"],
            ondelete="SET NULL",
            name=op.f("fk_ops_audit_events_admin_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_audit_events")),
    )
    op.create_index("ix_ops_audit_events_created_at", "ops_audit_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_ops_audit_events_created_at", table_name="ops_audit_events")
    op.drop_table("ops_audit_events")
