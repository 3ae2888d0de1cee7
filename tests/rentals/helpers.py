"""Helpers shared by the rentals, proxy and end-to-end tests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.proxy.models import PortAllocation
from app.rentals.models import Rental


def set_node_status(node_id: uuid.UUID, status: NodeStatus, **flags: Any) -> None:
    """Move a node through the guarded transition (as the fleet's liveness would)."""
    with session_scope() as session:
        node = session.get(HostNode, node_id, with_for_update=True)
        assert node is not None
        for key, value in flags.items():
            setattr(node, key, value)
        if status == NodeStatus.ONLINE:
            node.last_seen_at = utcnow()
        transition_node(session, node, status, reason="test")


def rental_body(node_id: uuid.UUID | str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": str(node_id),
        "image": "localhost/busybox:latest",
        "command": ["sleep", "3600"],
        "env": {"GREETING": "hi"},
        "ports": [22, 8080],
    }
    body.update(overrides)
    return body


def load_rental(rental_id: uuid.UUID | str) -> Rental:
    with session_scope() as session:
        rental = session.get(Rental, uuid.UUID(str(rental_id)))
        assert rental is not None
        session.expunge(rental)
        return rental


def load_node(node_id: uuid.UUID | str) -> HostNode:
    with session_scope() as session:
        node = session.get(HostNode, uuid.UUID(str(node_id)))
        assert node is not None
        session.expunge(node)
        return node


def live_allocations(rental_id: uuid.UUID | str | None = None) -> list[PortAllocation]:
    with session_scope() as session:
        query = select(PortAllocation).where(PortAllocation.released_at.is_(None))
        if rental_id is not None:
            query = query.where(PortAllocation.rental_id == uuid.UUID(str(rental_id)))
        rows = list(session.execute(query).scalars())
        for row in rows:
            session.expunge(row)
        return rows


def all_allocations(rental_id: uuid.UUID | str) -> list[PortAllocation]:
    with session_scope() as session:
        rows = list(
            session.execute(
                select(PortAllocation).where(PortAllocation.rental_id == uuid.UUID(str(rental_id)))
            ).scalars()
        )
        for row in rows:
            session.expunge(row)
        return rows


def backdate_rental(rental_id: uuid.UUID | str, seconds: float) -> None:
    """Pretend the rental was created `seconds` earlier (for timeouts)."""
    with session_scope() as session:
        session.execute(
            update(Rental)
            .where(Rental.id == uuid.UUID(str(rental_id)))
            .values(created_at=Rental.created_at - timedelta(seconds=seconds))
        )


def backdate_node_status(node_id: uuid.UUID | str, seconds: float) -> None:
    with session_scope() as session:
        session.execute(
            update(HostNode)
            .where(HostNode.id == uuid.UUID(str(node_id)))
            .values(
                status_changed_at=utcnow() - timedelta(seconds=seconds),
                last_seen_at=utcnow() - timedelta(seconds=seconds + 5),
            )
        )


def rental_count(status: RentalStatus | None = None) -> int:
    with session_scope() as session:
        query = select(Rental.id)
        if status is not None:
            query = query.where(Rental.status == status)
        return len(list(session.execute(query).scalars()))
