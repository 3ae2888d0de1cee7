"""Import every model so that Base.metadata knows all tables (Alembic, tests)."""

from app.auth.models import User
from app.billing.models import Transaction
from app.db import Base
from app.fleet.models import HostNode, NodeApiKey, NodeStatusEvent
from app.idempotency import IdempotencyKey
from app.proxy.models import PortAllocation
from app.rentals.models import Rental

__all__ = [
    "Base",
    "HostNode",
    "IdempotencyKey",
    "NodeApiKey",
    "NodeStatusEvent",
    "PortAllocation",
    "Rental",
    "Transaction",
    "User",
]
