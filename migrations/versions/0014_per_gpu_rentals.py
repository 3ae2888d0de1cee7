"""per-GPU rentals: a rental takes gpu_count of its node's GPUs; several rentals per node.

* rentals.gpu_count: how many GPUs the rental holds (0 on a CPU-only node, which is rented whole).
* rental_gpus: the concrete GPUs (index and UUID) a worker assigned to a rental; a partial unique
  index keeps one GPU with at most one live rental.
* host_nodes.gpus_in_use: the GPUs held by the node's live rentals (a CPU-only node's rental counts
  as 1: the whole node), kept in the same transactions as the rentals it counts.
* The one-live-rental-per-node index goes.

Existing data: every rental held all of its node's GPUs, so gpu_count is the node's GPU count, each
live rental gets rows for GPUs 0..n-1 (UUIDs from the agent's detected specs where known), and
gpus_in_use is counted from the live rentals.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

LIVE = "status IN ('pending', 'active')"


def upgrade() -> None:
    op.add_column(
        "rentals",
        sa.Column("gpu_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_check_constraint(op.f("ck_rentals_gpu_count_not_negative"), "rentals", "gpu_count >= 0")
    op.execute(
        "UPDATE rentals r SET gpu_count = coalesce((n.specs->>'gpu_count')::integer, 0) "
        "FROM host_nodes n WHERE n.id = r.node_id"
    )
    op.add_column(
        "host_nodes",
        sa.Column("gpus_in_use", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_check_constraint(op.f("ck_host_nodes_gpus_in_use_not_negative"), "host_nodes", "gpus_in_use >= 0")
    op.execute(
        "UPDATE host_nodes n SET gpus_in_use = u.used FROM ("
        "  SELECT node_id, sum(greatest(gpu_count, 1)) AS used FROM rentals"
        f"  WHERE {LIVE} GROUP BY node_id) u WHERE u.node_id = n.id"
    )
    op.create_table(
        "rental_gpus",
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("gpu_uuid", sa.String(128), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("rental_id", "gpu_index", name=op.f("pk_rental_gpus")),
        sa.ForeignKeyConstraint(
            ["rental_id"],
            ["rentals.id"],
            name=op.f("fk_rental_gpus_rental_id_rentals"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["host_nodes.id"],
            name=op.f("fk_rental_gpus_node_id_host_nodes"),
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("gpu_index >= 0", name=op.f("ck_rental_gpus_gpu_index_not_negative")),
    )
    op.create_index(
        "uq_rental_gpus_one_live_rental_per_gpu",
        "rental_gpus",
        ["node_id", "gpu_index"],
        unique=True,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.execute(
        "INSERT INTO rental_gpus (rental_id, node_id, gpu_index, gpu_uuid) "
        "SELECT r.id, r.node_id, g.i, "
        "  (SELECT d->>'uuid' FROM jsonb_array_elements("
        "     coalesce(n.detected_specs->'gpus', '[]'::jsonb)) d"
        "   WHERE (d->>'index')::integer = g.i LIMIT 1) "
        "FROM rentals r JOIN host_nodes n ON n.id = r.node_id "
        "CROSS JOIN LATERAL generate_series(0, r.gpu_count - 1) AS g(i) "
        f"WHERE r.{LIVE} AND r.gpu_count > 0"
    )
    op.drop_index("uq_rentals_one_live_per_node", table_name="rentals")
    op.create_index(
        "ix_rentals_live_by_node",
        "rentals",
        ["node_id"],
        postgresql_where=sa.text(LIVE),
    )
    op.execute(
        "CREATE INDEX ix_offers_price_per_gpu ON host_nodes "
        "((hourly_rate / greatest(gpu_count, 1)), id) "
        "WHERE status = 'online' AND NOT draining AND NOT maintenance"
    )


def downgrade() -> None:
    op.drop_index("ix_offers_price_per_gpu", table_name="host_nodes")
    op.drop_index("ix_rentals_live_by_node", table_name="rentals")
    op.create_index(
        "uq_rentals_one_live_per_node",
        "rentals",
        ["node_id"],
        unique=True,
        postgresql_where=sa.text(LIVE),
    )
    op.drop_index("uq_rental_gpus_one_live_rental_per_gpu", table_name="rental_gpus")
    op.drop_table("rental_gpus")
    op.drop_constraint(op.f("ck_host_nodes_gpus_in_use_not_negative"), "host_nodes", type_="check")
    op.drop_column("host_nodes", "gpus_in_use")
    op.drop_constraint(op.f("ck_rentals_gpu_count_not_negative"), "rentals", type_="check")
    op.drop_column("rentals", "gpu_count")
