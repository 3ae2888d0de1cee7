"""Small database helpers for fleet tests."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select

from app.db import session_scope
from app.enums import NodeStatus, RentalStatus
from app.fleet.capacity import gpu_total, units
from app.fleet.models import HostNode, NodeStatusEvent
from app.rentals.models import Rental
from app.rentals.state import LIVE


def node_row(node_id: uuid.UUID) -> HostNode:
    with session_scope() as session:
        node = session.get(HostNode, node_id)
        assert node is not None
        session.expunge(node)
        return node


def set_node(node_id: uuid.UUID, **values: object) -> None:
    with session_scope() as session:
        node = session.get(HostNode, node_id)
        assert node is not None
        for name, value in values.items():
            setattr(node, name, value)


def history(node_id: uuid.UUID) -> list[tuple[NodeStatus, str | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(NodeStatusEvent.status, NodeStatusEvent.reason)
            .where(NodeStatusEvent.node_id == node_id)
            .order_by(NodeStatusEvent.id)
        ).all()
        return [(NodeStatus(status), reason) for status, reason in rows]


def make_rental(
    node_id: uuid.UUID,
    renter_id: uuid.UUID,
    *,
    status: RentalStatus = RentalStatus.ACTIVE,
    container_id: str | None = None,
) -> uuid.UUID:
    """A rental of the whole node written directly; a live one holds the node's GPUs as a rental
    made through the API does (host_nodes.gpus_in_use)."""
    with session_scope() as session:
        node = session.get(HostNode, node_id, with_for_update=True)
        assert node is not None
        gpus = gpu_total(node)
        rental = Rental(
            renter_id=renter_id,
            node_id=node_id,
            status=status,
            image="localhost/busybox:latest",
            cost_per_hour=Decimal("1.2000"),
            container_id=container_id,
            gpu_count=gpus,
        )
        session.add(rental)
        if status in LIVE:
            node.gpus_in_use += units(gpus)
        session.flush()
        return rental.id
