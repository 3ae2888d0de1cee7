"""Marketplace and pricing: offer search indexes, materialised reliability, price history.

The offer indexes are partial on the offer predicate (online, not draining, not in maintenance),
so they hold only what a search can return and the planner walks them in sort order.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OFFER = "status = 'online' AND NOT draining AND NOT maintenance"
# (name, columns or expressions, extra predicate)
OFFER_INDEXES = [
    ("ix_offers_price", "hourly_rate, id", ""),
    ("ix_offers_tflops", "tflops, id", ""),
    ("ix_offers_value", "(tflops / NULLIF(hourly_rate, 0)), id", ""),
    ("ix_offers_country_price", "country, hourly_rate, id", ""),
    ("ix_offers_lat_lng", "lat, lng", " AND lat IS NOT NULL"),
]


def upgrade() -> None:
    op.create_table(
        "node_reliability",
        sa.Column("node_id", sa.UUID(), nullable=False),
        sa.Column("reliability", sa.Numeric(precision=5, scale=4), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("reliability >= 0 AND reliability <= 1",
                           name=op.f("ck_node_reliability_fraction")),
        sa.ForeignKeyConstraint(["node_id"], ["host_nodes.id"],
                                name=op.f("fk_node_reliability_node_id_host_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_reliability")),
    )
    op.create_table(
        "price_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.UUID(), nullable=False),
        sa.Column("old_rate", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("new_rate", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("suggested_rate", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["host_nodes.id"],
                                name=op.f("fk_price_changes_node_id_host_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_changes")),
    )
    op.create_index("ix_price_changes_node_created", "price_changes", ["node_id", "created_at"])

    for name, columns, extra in OFFER_INDEXES:
        op.execute(f"CREATE INDEX {name} ON host_nodes ({columns}) WHERE {OFFER}{extra}")
    # Partial, case-insensitive GPU model search (ILIKE '%...%') uses trigrams.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX ix_offers_gpu_model_trgm ON host_nodes "
               f"USING gin (gpu_model gin_trgm_ops) WHERE {OFFER}")
    # Pricing: the market of one GPU model (online or busy GPU nodes).
    op.execute("CREATE INDEX ix_host_nodes_market ON host_nodes (lower(gpu_model), status) "
               "WHERE status IN ('online', 'busy') AND gpu_count > 0")
    op.execute("CREATE INDEX ix_host_nodes_auto_match ON host_nodes (id) WHERE auto_match_market")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_host_nodes_auto_match")
    op.execute("DROP INDEX IF EXISTS ix_host_nodes_market")
    op.execute("DROP INDEX IF EXISTS ix_offers_gpu_model_trgm")
    for name, _, _ in reversed(OFFER_INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_price_changes_node_created", table_name="price_changes")
    op.drop_table("price_changes")
    op.drop_table("node_reliability")
    # pg_trgm stays: dropping an extension other objects may use is not this revision's call.
