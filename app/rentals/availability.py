"""Whether a node can take a rental: one rule, read by the API (to refuse a request) and by the
lifecycle (to cancel a pending rental whose node changed before it started)."""

from __future__ import annotations

from enum import StrEnum

from app.enums import NodeStatus
from app.fleet.models import HostNode


class Unavailable(StrEnum):
    MAINTENANCE = "maintenance"
    DRAINING = "draining"
    BUSY = "busy"
    OFFLINE = "offline"
    RECONCILING = "reconciling"


def why_unavailable(node: HostNode) -> Unavailable | None:
    """Why `node` cannot take a new rental now, or None when it can (its own status only; the
    API also counts the live rentals on it)."""
    if node.maintenance or node.status == NodeStatus.MAINTENANCE:
        return Unavailable.MAINTENANCE
    if node.draining:
        return Unavailable.DRAINING
    if node.needs_reconcile:
        return Unavailable.RECONCILING
    if node.status == NodeStatus.BUSY:
        return Unavailable.BUSY
    if node.status != NodeStatus.ONLINE:
        return Unavailable.OFFLINE
    return None


# The renter's 409 message when a request is refused.
REQUEST_REFUSED: dict[Unavailable, str] = {
    Unavailable.MAINTENANCE: "The node is in maintenance and cannot be rented now.",
    Unavailable.DRAINING: "The node is draining and takes no new rentals.",
    Unavailable.BUSY: "The node is already rented.",
    Unavailable.OFFLINE: "The node is offline.",
    Unavailable.RECONCILING: "The node must report its containers before it takes new rentals.",
}

# The failure reason of a pending rental cancelled because its node changed before it started.
NOT_STARTED: dict[Unavailable, str] = {
    Unavailable.MAINTENANCE: "the node went into maintenance before the rental started",
    Unavailable.DRAINING: "the node is draining",
    Unavailable.BUSY: "the node went offline before the rental started",
    Unavailable.OFFLINE: "the node went offline before the rental started",
    Unavailable.RECONCILING: "the node must report its containers before it takes new rentals",
}
