"""The node state machine: every status change goes through :func:`transition_node`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db import utcnow
from app.enums import NodeStatus
from app.errors import InvalidTransition
from app.fleet.events import node_changed, node_status_changed
from app.fleet.models import HostNode, NodeStatusEvent

ONLINE, OFFLINE, BUSY, MAINTENANCE = (
    NodeStatus.ONLINE,
    NodeStatus.OFFLINE,
    NodeStatus.BUSY,
    NodeStatus.MAINTENANCE,
)

NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    OFFLINE: frozenset({ONLINE, MAINTENANCE, BUSY}),
    ONLINE: frozenset({OFFLINE, BUSY, MAINTENANCE}),
    BUSY: frozenset({ONLINE, OFFLINE}),
    MAINTENANCE: frozenset({ONLINE, OFFLINE}),
}


def transition_node(
    session: Session, node: HostNode, new: NodeStatus, *, reason: str | None = None
) -> bool:
    """Move `node` to `new` (the caller holds its row lock); record it in the history.

    Returns False when the node already has that status (redelivered events change nothing).
    """
    current = NodeStatus(node.status)
    if current == new:
        return False
    if new not in NODE_TRANSITIONS[current]:
        raise InvalidTransition(f"A node cannot go from {current} to {new}.")
    now = utcnow()
    node.status = new
    node.status_changed_at = now
    session.add(NodeStatusEvent(node_id=node.id, status=new, at=now, reason=reason))
    node_changed(session, node.id)
    node_status_changed(session, node, previous=current)
    return True
