from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column, uuid_pk

AUDIT_ACTIONS = ("requeue", "discard", "requeue_all", "discard_all")


class OpsAuditEvent(Base):
    """An operator's action on the queues (who, what, on which message), kept for the record."""

    __tablename__ = "ops_audit_events"
    __table_args__ = (
        CheckConstraint(
            "action IN ('requeue', 'discard', 'requeue_all', 'discard_all')", name="action_known"
        ),
        CheckConstraint("count >= 0", name="count_non_negative"),
        Index("ix_ops_audit_events_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    admin_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    admin_clerk_id: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    queue: Mapped[str] = mapped_column(String(255), nullable=False)
    message_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = created_at_column()
