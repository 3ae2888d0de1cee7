"""Import every model so that Base.metadata knows all tables (Alembic, tests)."""

from app.auth.models import ApiKey, SshKey, User
from app.billing.models import Transaction
from app.db import Base
from app.fleet.models import (
    HostNode,
    MaintenanceWindow,
    NodeApiKey,
    NodeSelfTest,
    NodeStatusEvent,
)
from app.idempotency import IdempotencyKey
from app.marketplace.models import NodeReliability
from app.ops.models import OpsAuditEvent
from app.pricing.models import PriceChange
from app.proxy.models import PortAllocation
from app.rentals.models import Rental
from app.webhooks.models import (
    LowBalanceAlert,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

__all__ = [
    "ApiKey",
    "Base",
    "HostNode",
    "IdempotencyKey",
    "LowBalanceAlert",
    "MaintenanceWindow",
    "NodeApiKey",
    "NodeReliability",
    "NodeSelfTest",
    "NodeStatusEvent",
    "OpsAuditEvent",
    "PortAllocation",
    "PriceChange",
    "Rental",
    "SshKey",
    "Transaction",
    "User",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSubscription",
]
