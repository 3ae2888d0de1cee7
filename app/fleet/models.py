from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column, updated_at_column, uuid_pk
from app.enums import NodeStatus, pg_enum


class HostNode(Base):
    """A host's machine. `specs`, `pricing` and `location` are what the host declared; the
    searchable fields are generated columns derived from them, so there is one source of truth."""

    __tablename__ = "host_nodes"
    # The liveness sweep looks nodes up by status and last heartbeat.
    __table_args__ = (
        Index("ix_host_nodes_status_last_seen_at", "status", "last_seen_at"),
        CheckConstraint("gpus_in_use >= 0", name="gpus_in_use_not_negative"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    specs: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    pricing: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    location: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[NodeStatus] = mapped_column(
        pg_enum(NodeStatus, "node_status"),
        nullable=False,
        default=NodeStatus.OFFLINE,
        server_default=NodeStatus.OFFLINE.value,
    )
    maintenance: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    draining: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # The agent did not confirm a stop (or the node went away with a rental on it): until it
    # reconnects and reports its containers, some of its rentals' ports stay quarantined.
    needs_reconcile: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    verified: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    detected_specs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The last self-test's figures (shown on offers) and whether it failed; a node whose last
    # self-test failed is offered only when its owner sets list_unverified.
    measured_specs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    self_test_failed: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    list_unverified: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # GPUs held by the node's live rentals (a CPU-only node's one rental counts 1: the whole
    # node); changed with the rentals it counts (app/rentals/gpus.py).
    gpus_in_use: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    # Generated, indexed search columns (see migrations and marketplace.service).
    gpu_model: Mapped[str] = mapped_column(Text, Computed("(specs->>'gpu_model')", persisted=True))
    gpu_count: Mapped[int] = mapped_column(
        Integer, Computed("((specs->>'gpu_count')::integer)", persisted=True)
    )
    gpu_vram_gb: Mapped[Decimal] = mapped_column(
        Numeric(10, 2), Computed("((specs->>'gpu_vram_gb')::numeric(10,2))", persisted=True)
    )
    tflops: Mapped[Decimal] = mapped_column(
        Numeric(12, 2), Computed("((specs->>'tflops')::numeric(12,2))", persisted=True)
    )
    cpu_cores: Mapped[int] = mapped_column(
        Integer, Computed("((specs->>'cpu_cores')::integer)", persisted=True)
    )
    ram_gb: Mapped[Decimal] = mapped_column(
        Numeric(10, 2), Computed("((specs->>'ram_gb')::numeric(10,2))", persisted=True)
    )
    disk_gb: Mapped[Decimal] = mapped_column(
        Numeric(12, 2), Computed("((specs->>'disk_gb')::numeric(12,2))", persisted=True)
    )
    hourly_rate: Mapped[Decimal] = mapped_column(
        Numeric(18, 4), Computed("((pricing->>'hourly_rate')::numeric(18,4))", persisted=True)
    )
    auto_match_market: Mapped[bool] = mapped_column(
        Boolean,
        Computed("(coalesce((pricing->>'auto_match_market')::boolean, false))", persisted=True),
    )
    country: Mapped[str] = mapped_column(
        String(2), Computed("(upper(location->>'country'))", persisted=True)
    )
    lat: Mapped[float | None] = mapped_column(
        Numeric(9, 6), Computed("((location->>'lat')::numeric(9,6))", persisted=True)
    )
    lng: Mapped[float | None] = mapped_column(
        Numeric(9, 6), Computed("((location->>'lng')::numeric(9,6))", persisted=True)
    )


class NodeApiKey(Base):
    """A node's API key: only a SHA-256 hash is kept; `prefix` finds the row, the hash proves it."""

    __tablename__ = "node_api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("host_nodes.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NodeStatusEvent(Base):
    """The node's status history (uptime and reliability are computed from it)."""

    __tablename__ = "node_status_events"
    __table_args__ = (Index("ix_node_status_events_node_at", "node_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[NodeStatus] = mapped_column(pg_enum(NodeStatus, "node_status"), nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    reason: Mapped[str | None] = mapped_column(Text)


class NodeSelfTest(Base):
    """One self-test run: the command sent (with its nonce) and what the agent reported."""

    __tablename__ = "node_self_tests"
    __table_args__ = (Index("ix_node_self_tests_node_created", "node_id", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    trigger: Mapped[str] = mapped_column(String(32), nullable=False)
    nonce: Mapped[str] = mapped_column(String(64), nullable=False)
    # The work asked for (disk_mb, matrix ...), the declared specs and the detected hardware then.
    work: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    expected: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    detected: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    measured: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    failures: Mapped[list[str]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb")
    )
    proof: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MaintenanceWindow(Base):
    """Announced maintenance: no rentals across it, rentals end at its start, no reliability
    lost inside it."""

    __tablename__ = "maintenance_windows"
    __table_args__ = (
        Index("ix_maintenance_windows_node_starts", "node_id", "starts_at"),
        Index(
            "ix_maintenance_windows_due",
            "starts_at",
            postgresql_where=text("cancelled_at IS NULL AND finished_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    node_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("host_nodes.id", ondelete="CASCADE"), nullable=False
    )
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by the periodic job: when it put the node in maintenance, and when it gave it back.
    began_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
