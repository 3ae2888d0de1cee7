"""Signals about node changes that other domains react to (the offers cache, webhooks)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.enums import NodeStatus
from app.fleet.models import HostNode
from app.fleet.schemas import NodeSchema
from app.marketplace.cache import invalidate_offers_after_commit
from app.webhooks.events import record_event
from app.webhooks.models import EventType


def node_changed(session: Session, node_id: uuid.UUID) -> None:
    """Mark that a node's searchable state changed; cached offers go stale once this commits.

    A change inside a savepoint that rolls back invalidates nothing, and nothing is invalidated
    before the real commit.
    """
    invalidate_offers_after_commit(session)


def node_status_changed(
    session: Session, node: HostNode, *, previous: NodeStatus
) -> uuid.UUID | None:
    """node.offline when the node goes offline, node.online when it comes back (to its owner).

    Written to the webhooks outbox in this transaction: a change that rolls back sends nothing.
    """
    if node.status == NodeStatus.OFFLINE and previous != NodeStatus.OFFLINE:
        type = EventType.NODE_OFFLINE
    elif previous == NodeStatus.OFFLINE and node.status != NodeStatus.OFFLINE:
        type = EventType.NODE_ONLINE
    else:
        return None
    return record_event(
        session, user_id=node.owner_id, type=type, data=lambda: NodeSchema().dump(node)
    )
