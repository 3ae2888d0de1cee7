"""Enumerations shared by several domains, stored by value (lower-case on the wire and in SQL)."""

from enum import StrEnum

from sqlalchemy import Enum as SAEnum


class Role(StrEnum):
    RENT = "rent"
    LEASE = "lease"
    BOTH = "both"


class NodeStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    BUSY = "busy"
    MAINTENANCE = "maintenance"


class RentalStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class TransactionType(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


def pg_enum(enum_cls: type[StrEnum], name: str) -> SAEnum:
    """A PostgreSQL enum type storing the members' values."""
    return SAEnum(
        enum_cls,
        name=name,
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )
