"""rentals and proxy: stop reason and exit code; one live port per container port of a rental.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rentals", sa.Column("stop_reason", sa.Text(), nullable=True))
    op.add_column("rentals", sa.Column("exit_code", sa.Integer(), nullable=True))
    op.create_index("uq_port_allocations_live_rental_port", "port_allocations",
                    ["rental_id", "container_port"], unique=True,
                    postgresql_where=sa.text("released_at IS NULL"))


def downgrade() -> None:
    op.drop_index("uq_port_allocations_live_rental_port", table_name="port_allocations",
                  postgresql_where=sa.text("released_at IS NULL"))
    op.drop_column("rentals", "exit_code")
    op.drop_column("rentals", "stop_reason")
