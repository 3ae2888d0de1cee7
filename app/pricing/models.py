"""Pricing history: every automatic change of a node's hourly rate."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Numeric, String, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column
from app.fleet.models import HostNode


class PriceChange(Base):
    __tablename__ = "price_changes"
    __table_args__ = (Index("ix_price_changes_node_created", "node_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), nullable=False
    )
    old_rate: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    new_rate: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    # "market" or "baseline": where the suggestion came from.
    basis: Mapped[str] = mapped_column(String(16), nullable=False)
    # Why it changed, e.g. "auto_match"; "floor" when min_hourly_rate bound the suggestion.
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    suggested_rate: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    sample_size: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


# Pricing's indexes on host_nodes (created by migration 0005): the market of one GPU model, and
# the nodes the auto-match job reprices.
PRICING_INDEXES = (
    Index(
        "ix_host_nodes_market",
        func.lower(HostNode.gpu_model),
        HostNode.status,
        postgresql_where=text("status IN ('online', 'busy') AND gpu_count > 0"),
    ),
    Index("ix_host_nodes_auto_match", HostNode.id, postgresql_where=text("auto_match_market")),
)
