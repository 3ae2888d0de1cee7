from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
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
from app.errors import InvalidTransition

# The platform's own account: platform fees are credited to it, so that every account (this one
# included) has balance = credits - debits, and usage debits = host earnings + platform fees.
PLATFORM_CLERK_ID = "system:platform"
# Payouts move money through two more platform accounts, so that the same rule holds: a requested
# payout sits in PAYOUTS_PENDING until an admin decides; an approved one ends in PAYOUTS_PAID
# (money that has left the platform), a rejected one goes back to the host.
PAYOUTS_PENDING_CLERK_ID = "system:payouts-pending"
PAYOUTS_PAID_CLERK_ID = "system:payouts-paid"
SYSTEM_CLERK_IDS = (PLATFORM_CLERK_ID, PAYOUTS_PENDING_CLERK_ID, PAYOUTS_PAID_CLERK_ID)


class EntryKind(StrEnum):
    """Why a ledger line exists (its `type` says which way the money moved)."""

    TOPUP = "topup"  # credit: an admin added funds (idempotent on reference_id)
    USAGE = "usage"  # debit: a renter paid for rental time
    EARNING = "earning"  # credit: the host's share of a usage charge
    FEE = "fee"  # credit to the platform account: its share of a usage charge
    ADJUSTMENT = "adjustment"  # anything else (manual corrections, test set-up)
    # A payout's steps, each a pair of lines of the same amount (see Payout):
    PAYOUT = "payout"  # requested: host debit, payouts-pending credit
    PAYOUT_RETURN = "payout_return"  # rejected: payouts-pending debit, host credit
    PAYOUT_PAID = "payout_paid"  # approved: payouts-pending debit, payouts-paid credit


PAYOUT_KINDS = (EntryKind.PAYOUT, EntryKind.PAYOUT_RETURN, EntryKind.PAYOUT_PAID)


class Transaction(Base):
    """One ledger line. Amounts are positive; `type` says which way the money moved."""

    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "kind IN ('topup', 'usage', 'earning', 'fee', 'adjustment', 'payout',"
            " 'payout_return', 'payout_paid')",
            name="kind_known",
        ),
        # A payout's lines belong to it, and only its lines carry it.
        CheckConstraint(
            "(payout_id IS NOT NULL) = (kind IN ('payout', 'payout_return', 'payout_paid'))",
            name="payout_lines_valid",
        ),
        # Each step of a payout is written once: one debit and one credit of each kind.
        Index(
            "uq_transactions_payout_kind_type",
            "payout_id",
            "kind",
            "type",
            unique=True,
            postgresql_where=text("payout_id IS NOT NULL"),
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
        # A posting has at most one line of each kind: a posting can never be written twice.
        Index(
            "uq_transactions_rental_posting_kind",
            "rental_id",
            "posting",
            "kind",
            unique=True,
            postgresql_where=text("posting IS NOT NULL"),
        ),
        CheckConstraint(
            "posting IS NULL OR (posting > 0 AND rental_id IS NOT NULL AND charge_id IS NULL)",
            name="posting_valid",
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
    # Lines written before per-second billing belong to a per-minute charge...
    charge_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("billing_charges.id", ondelete="RESTRICT")
    )
    # ...lines written since to a posting: the rental's n-th (hourly or final) posting.
    posting: Mapped[int | None] = mapped_column(Integer)
    # Payout lines: the payout whose step they record.
    payout_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payouts.id", ondelete="RESTRICT")
    )
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class BillingCharge(Base):
    """One billed period of a rental under per-minute billing (history: nothing writes these now).

    Minutes (from_minute, to_minute] of the rental's billable clock.

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


class RentalAccrual(Base):
    """What a rental has posted: one row per rental, written only when the rental posts.

    `billed_seconds` whole seconds of the billable clock are settled and posted (the clock stood at
    the wall-clock time `billed_until` when they were); they cost
    ``round_half_up(cost_per_hour * billed_seconds / 3600)``, of which the renter paid
    `billed_amount` and `waived_amount` is what the balance could not cover (never charged later).
    `billed_fee` is the platform's share of `billed_amount`. The ledger lines of the rental's
    postings add up to these figures exactly; what the rental has accrued since is not stored
    anywhere: it is derived from its clock (app/billing/accrued.py). The check constraints hold the
    rounding rule in the database.
    """

    __tablename__ = "rental_accruals"
    __table_args__ = (
        CheckConstraint("billed_seconds >= 0", name="seconds_valid"),
        CheckConstraint(
            "billed_amount + waived_amount = ROUND(cost_per_hour * billed_seconds / 3600, 4)",
            name="amount_per_second",
        ),
        CheckConstraint(
            "billed_amount >= 0 AND waived_amount >= 0 AND billed_fee >= 0"
            " AND billed_fee <= billed_amount",
            name="amount_valid",
        ),
        CheckConstraint("postings >= 0", name="postings_valid"),
        {"postgresql_with": {"fillfactor": 50}},
    )

    rental_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("rentals.id", ondelete="RESTRICT"), primary_key=True
    )
    renter_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    host_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # The rental's locked price, here so that a check constraint can hold the rounding rule.
    cost_per_hour: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    billed_seconds: Mapped[int] = mapped_column(BigInteger, nullable=False)
    billed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    billed_amount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    waived_amount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    billed_fee: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    # Postings made (the next one is number postings + 1) and the hour mark of the rental
    # the last hourly posting was made for (start_time + whole hours; the end for the final one).
    postings: Mapped[int] = mapped_column(Integer, nullable=False)
    posted_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BillingWatermark(Base):
    """One row: the time up to which the last billing tick looked at every active rental.

    Each tick moves it forward (never back: a late, redelivered tick leaves it alone); ops
    reports how far behind it is (app/billing/service.py: unbilled_since).
    """

    __tablename__ = "billing_watermark"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PayoutStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"


# The only transitions: an admin decides a requested payout once.
PAYOUT_TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.REQUESTED: frozenset({PayoutStatus.APPROVED, PayoutStatus.REJECTED}),
    PayoutStatus.APPROVED: frozenset(),
    PayoutStatus.REJECTED: frozenset(),
}


class Payout(Base):
    """A host's request to be paid `amount` out of its balance, and the admin's decision.

    Ledger lines (`transactions.payout_id`): the request debits the host and credits the
    payouts-pending account; an approval moves the amount from pending to payouts-paid; a
    rejection moves it back to the host. The state changes only through :meth:`transition`.
    """

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('requested', 'approved', 'rejected')", name="status_known"),
        CheckConstraint(
            "(status = 'requested') = (decided_at IS NULL)", name="decided_when_not_requested"
        ),
        CheckConstraint("status <> 'rejected' OR reason IS NOT NULL", name="rejection_has_reason"),
        Index("ix_payouts_user_created", "user_id", "created_at", "id"),
        Index(
            "ix_payouts_requested",
            "created_at",
            "id",
            postgresql_where=text("status = 'requested'"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=PayoutStatus.REQUESTED.value
    )
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT")
    )
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    def transition(self, new: PayoutStatus) -> None:
        """Move to `new`; anything but requested -> approved | rejected is a 409."""
        current = PayoutStatus(self.status)
        if new not in PAYOUT_TRANSITIONS[current]:
            raise InvalidTransition(f"A payout that is {current} cannot become {new}.")
        self.status = new.value
