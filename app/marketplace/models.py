"""Marketplace read models: values materialised for search (kept beside the node, not in it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Numeric, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.fleet.models import HostNode


class NodeReliability(Base):
    """A node's uptime fraction over the last 7 days, refreshed by a periodic job.

    Searches read this row instead of scanning the status history on every request.
    """

    __tablename__ = "node_reliability"
    __table_args__ = (CheckConstraint("reliability >= 0 AND reliability <= 1", name="fraction"),)

    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    reliability: Mapped[Decimal] = mapped_column(Numeric(5, 4), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# The offer search indexes on host_nodes (created by migration 0005). Partial on the offer
# predicate, so they hold only what a search can return, in the order it sorts.
OFFER_INDEX_WHERE = text("status = 'online' AND NOT draining AND NOT maintenance")
OFFER_INDEXES = (
    Index("ix_offers_price", HostNode.hourly_rate, HostNode.id, postgresql_where=OFFER_INDEX_WHERE),
    Index("ix_offers_tflops", HostNode.tflops, HostNode.id, postgresql_where=OFFER_INDEX_WHERE),
    Index(
        "ix_offers_value",
        (HostNode.tflops / func.nullif(HostNode.hourly_rate, 0)),
        HostNode.id,
        postgresql_where=OFFER_INDEX_WHERE,
    ),
    Index(
        "ix_offers_price_per_gpu",
        (HostNode.hourly_rate / func.greatest(HostNode.gpu_count, 1)),
        HostNode.id,
        postgresql_where=OFFER_INDEX_WHERE,
    ),
    Index(
        "ix_offers_country_price",
        HostNode.country,
        HostNode.hourly_rate,
        HostNode.id,
        postgresql_where=OFFER_INDEX_WHERE,
    ),
    Index(
        "ix_offers_lat_lng",
        HostNode.lat,
        HostNode.lng,
        postgresql_where=text(
            "status = 'online' AND NOT draining AND NOT maintenance AND lat IS NOT NULL"
        ),
    ),
    Index(
        "ix_offers_gpu_model_trgm",
        HostNode.gpu_model,
        postgresql_using="gin",
        postgresql_ops={"gpu_model": "gin_trgm_ops"},
        postgresql_where=OFFER_INDEX_WHERE,
    ),
)
