from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column, uuid_pk
from app.enums import TransactionType, pg_enum

# The platform's own account: platform fees are credited to it, so that every account (this one
# included) has balance = credits - debits, and usage debits = host earnings + platform fees.
PLATFORM_CLERK_ID = "system:platform"


class EntryKind(StrEnum):
    """Why a ledger line exists (its `type` says which way the money moved)."""

    TOPUP = "topup"  # credit: an admin added funds (idempotent on reference_id)
    USAGE = "usage"  # debit: a renter paid for rental minutes
    EARNING = "earning"  # credit: the host's share of a usage charge
    FEE = "fee"  # credit to the platform account: its share of a usage charge
    ADJUSTMENT = "adjustment"  # anything else (manual corrections, test set-up)


class Transaction(Base):
    """One ledger line. Amounts are positive; `type` says which way the money moved."""

    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "kind IN ('topup', 'usage', 'earning', 'fee', 'adjustment')", name="kind_known"
        ),
        Index("ix_transactions_user_created", "user_id", "created_at", "id"),
        # A charge has at most one line of each kind: a charge can never be written twice.
        Index(
            "uq_transactions_charge_kind",
            "charge_id",
            "kind",
            unique=True,
            postgresql_where=text("charge_id IS NOT NULL"),
        ),
        # A top-up reference (the payment's id) is credited once, whoever asks how often.
        Index(
            "uq_transactions_topup_reference",
            "reference_id",
            unique=True,
            postgresql_where=text("kind = 'topup'"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    type: Mapped[TransactionType] = mapped_column(
        pg_enum(TransactionType, "transaction_type"), nullable=False
    )
    kind: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default=EntryKind.ADJUSTMENT,
        server_default=EntryKind.ADJUSTMENT.value,
    )
    reference_id: Mapped[str | None] = mapped_column(String(255))
    rental_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="RESTRICT")
    )
    charge_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("billing_charges.id", ondelete="RESTRICT")
    )
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class BillingCharge(Base):
    """One billed period of a rental: minutes (from_minute, to_minute] of its billable clock.

    The constraints make double billing impossible whatever the workers do: periods start where
    the previous one ended (the self-referencing key), and no two periods start or end at the same
    minute, so a rental's periods form one chain from minute 0 that never overlaps itself.
    `nominal` is what the minutes cost; `amount` what the renter's balance covered (less only when
    it ran out), split into `fee` for the platform and the rest for the host.
    """

    __tablename__ = "billing_charges"
    __table_args__ = (
        UniqueConstraint("rental_id", "from_minute", name="uq_billing_charges_rental_from"),
        UniqueConstraint("rental_id", "to_minute", name="uq_billing_charges_rental_to"),
        ForeignKeyConstraint(
            ["rental_id", "after_minute"],
            ["billing_charges.rental_id", "billing_charges.to_minute"],
            name="fk_billing_charges_follows_previous",
            ondelete="RESTRICT",
        ),
        CheckConstraint("from_minute >= 0 AND to_minute > from_minute", name="period_valid"),
        CheckConstraint("nominal >= 0 AND amount >= 0 AND amount <= nominal", name="amount_valid"),
        CheckConstraint("fee >= 0 AND fee <= amount", name="fee_valid"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    rental_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="RESTRICT"), nullable=False
    )
    # Who paid and who earned, as the rental and node said when it was billed (the ledger lines
    # carry the user keys; no foreign key here keeps the tick's inserts cheap).
    renter_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    host_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    from_minute: Mapped[int] = mapped_column(Integer, nullable=False)
    to_minute: Mapped[int] = mapped_column(Integer, nullable=False)
    # NULL for the first period (nothing precedes minute 0), else the minute it must follow.
    after_minute: Mapped[int | None] = mapped_column(
        Integer, Computed("(NULLIF(from_minute, 0))", persisted=True)
    )
    nominal: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    fee: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    # The wall-clock time the period was billed up to (the tick's time or the rental's end).
    billed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
