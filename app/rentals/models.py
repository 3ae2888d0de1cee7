from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column, updated_at_column, uuid_pk
from app.enums import RentalStatus, pg_enum


class Rental(Base):
    __tablename__ = "rentals"
    __table_args__ = (
        # A node holds several live rentals (one per share of its GPUs): found by node.
        Index(
            "ix_rentals_live_by_node",
            "node_id",
            postgresql_where=text("status IN ('pending', 'active')"),
        ),
        Index("ix_rentals_renter_created", "renter_id", "created_at"),
        Index("ix_rentals_status", "status"),
        # GET /rentals?label=k=v is a JSONB containment query (labels @> '{"k": "v"}').
        Index(
            "ix_rentals_labels",
            "labels",
            postgresql_using="gin",
            postgresql_ops={"labels": "jsonb_path_ops"},
        ),
        CheckConstraint(
            "phase IN ('queued', 'pulling', 'starting', 'running', 'stopping', 'ended')",
            name="phase_known",
        ),
        CheckConstraint("gpu_count >= 0", name="gpu_count_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    renter_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("host_nodes.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    )
    status: Mapped[RentalStatus] = mapped_column(
        pg_enum(RentalStatus, "rental_status"),
        nullable=False,
        default=RentalStatus.PENDING,
        server_default=RentalStatus.PENDING.value,
    )
    image: Mapped[str] = mapped_column(String(512), nullable=False)
    command: Mapped[list[str] | None] = mapped_column(JSONB)
    env: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    ports: Mapped[list[int]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb")
    )
    cost_per_hour: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    # How many of the node's GPUs the rental holds (0 on a CPU-only node, rented whole).
    gpu_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    container_id: Mapped[str | None] = mapped_column(String(128))
    connection_info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # Billing watermark: minutes since start_time already charged, and their cumulative amount.
    billed_minutes: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    billed_amount: Mapped[Decimal] = mapped_column(
        Numeric(18, 4), nullable=False, default=Decimal(0), server_default=text("0")
    )
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why a stop was asked for (e.g. "insufficient balance"); becomes failure_reason at the end.
    stop_reason: Mapped[str | None] = mapped_column(Text)
    # The container's exit status when it stopped (None when unknown or never started).
    exit_code: Mapped[int | None] = mapped_column(Integer)
    # Launch options (app/rentals/launch.py).
    entrypoint: Mapped[list[str] | None] = mapped_column(JSONB)
    onstart: Mapped[str | None] = mapped_column(Text)
    ssh_keys: Mapped[list[str]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb")
    )
    labels: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    # registry_auth sealed with REGISTRY_AUTH_KEY (Fernet); cleared when the rental leaves pending.
    registry_auth_sealed: Mapped[str | None] = mapped_column(Text)
    # Where a pending rental is (queued, pulling, starting), then running / ended; fed by the
    # agent's instance_progress. The start timeout counts from last_progress_at.
    phase: Mapped[str] = mapped_column(
        String(16), nullable=False, default="queued", server_default="queued"
    )
    progress: Mapped[float | None] = mapped_column(Float)
    last_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class RentalGpu(Base):
    """A GPU a worker assigned to a rental (app/rentals/gpus.py). While `released_at` is NULL
    the GPU is the rental's: the partial unique index keeps it from a second live rental."""

    __tablename__ = "rental_gpus"
    __table_args__ = (
        PrimaryKeyConstraint("rental_id", "gpu_index"),
        Index(
            "uq_rental_gpus_one_live_rental_per_gpu",
            "node_id",
            "gpu_index",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
        ),
        CheckConstraint("gpu_index >= 0", name="gpu_index_not_negative"),
    )

    rental_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="CASCADE"), nullable=False
    )
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="RESTRICT"), nullable=False
    )
    gpu_index: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_uuid: Mapped[str | None] = mapped_column(String(128))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class RentalFinalLogs(Base):
    """One chunk of the output a rental's container left when it stopped (the agent's `final`
    logs frames, at most 64 KiB in all per rental), served by GET /rentals/{id}/logs after the end.
    Kept apart from `rentals` so the hot rental rows stay small."""

    __tablename__ = "rental_final_logs"
    __table_args__ = (PrimaryKeyConstraint("rental_id", "seq"),)

    rental_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    lines: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)  # bytes of the lines, UTF-8
    truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = created_at_column()
