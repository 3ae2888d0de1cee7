from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class PortAllocation(Base):
    """A public port handed to a rental; unique among rows not yet released."""

    __tablename__ = "port_allocations"
    __table_args__ = (
        Index(
            "uq_port_allocations_live_port",
            "port",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
        ),
        Index("ix_port_allocations_rental", "rental_id"),
        # One live public port per container port of a rental: a redelivered provisioning
        # message cannot allocate a second one.
        Index(
            "uq_port_allocations_live_rental_port",
            "rental_id",
            "container_port",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
        ),
        Index(
            "ix_port_allocations_quarantined",
            "node_id",
            "quarantined_until",
            postgresql_where=text("released_at IS NULL AND quarantined_until IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    container_port: Mapped[int] = mapped_column(Integer, nullable=False)
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), nullable=False
    )
    rental_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="CASCADE"), nullable=False
    )
    allocated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the rental ended but its container (and tunnel) may still run: the port stays out
    # of the pool until the agent reconciles or this time passes.
    quarantined_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    proxy_name: Mapped[str | None] = mapped_column(String(200))
    proxy_opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    proxy_closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
