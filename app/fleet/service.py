"""Host nodes: registration, ownership, settings and keys. Functions never commit."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.node_keys import NewKey, issue_key
from app.config import get_settings
from app.db import utcnow
from app.enums import NodeStatus
from app.errors import Conflict, NotFound
from app.fleet.capacity import in_use
from app.fleet.events import node_changed
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.money import to_wire
from app.pagination import newest_first_page


def _pricing_json(pricing: dict[str, Any]) -> dict[str, Any]:
    out = {
        "hourly_rate": to_wire(pricing["hourly_rate"]),
        "auto_match_market": bool(pricing.get("auto_match_market", False)),
    }
    if pricing.get("min_hourly_rate") is not None:
        out["min_hourly_rate"] = to_wire(pricing["min_hourly_rate"])
    return out


def _location_json(location: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in location.items() if v is not None}


def _specs_json(specs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in specs.items() if v is not None}


def register_node(
    session: Session,
    *,
    owner: User,
    name: str | None,
    specs: dict[str, Any],
    pricing: dict[str, Any],
    location: dict[str, Any],
) -> tuple[HostNode, NewKey]:
    node = HostNode(
        owner_id=owner.id,
        name=name or f"{specs['gpu_count']}x {specs['gpu_model']}",
        specs=_specs_json(specs),
        pricing=_pricing_json(pricing),
        location=_location_json(location),
        status=NodeStatus.OFFLINE,
    )
    session.add(node)
    session.flush()
    key = issue_key(session, node_id=node.id)
    session.refresh(node)
    return node, key


def get_owned_node(
    session: Session, *, owner: User, node_id: uuid.UUID, lock: bool = False
) -> HostNode:
    """The node when `owner` owns it; 404 otherwise (never reveal another host's node)."""
    query = select(HostNode).where(HostNode.id == node_id, HostNode.owner_id == owner.id)
    if lock:
        query = query.with_for_update()
    node = session.execute(query).scalar_one_or_none()
    if node is None:
        raise NotFound("No such node.")
    return node


def list_nodes(
    session: Session, *, owner: User, limit: int, cursor: str | None
) -> tuple[list[HostNode], str | None]:
    query = select(HostNode).where(HostNode.owner_id == owner.id)
    return newest_first_page(session, query, HostNode, limit=limit, cursor=cursor)


def update_node(
    session: Session, *, owner: User, node_id: uuid.UUID, changes: dict[str, Any]
) -> HostNode:
    node = get_owned_node(session, owner=owner, node_id=node_id, lock=True)
    if "name" in changes:
        node.name = changes["name"]
    if "pricing" in changes:
        node.pricing = _pricing_json(changes["pricing"])
    if "location" in changes:
        node.location = _location_json(changes["location"])
    if "status" in changes:
        set_maintenance(session, node, changes["status"] == "maintenance")
    if "list_unverified" in changes:
        node.list_unverified = bool(changes["list_unverified"])
    node_changed(session, node.id)
    session.flush()
    session.refresh(node)
    return node


def set_maintenance(session: Session, node: HostNode, on: bool) -> None:
    if on:
        if node.status == NodeStatus.BUSY or in_use(node):
            raise Conflict("The node has live rentals; drain it and wait for them to end.")
        node.maintenance = True
        if node.status != NodeStatus.OFFLINE:
            transition_node(session, node, NodeStatus.MAINTENANCE, reason="host maintenance")
    else:
        node.maintenance = False
        if node.status == NodeStatus.MAINTENANCE:
            # Back to service: online only if the agent is still heard from.
            online = node.last_seen_at is not None and _recently_seen(node)
            transition_node(
                session,
                node,
                NodeStatus.ONLINE if online else NodeStatus.OFFLINE,
                reason="host ended maintenance",
            )


def _recently_seen(node: HostNode) -> bool:
    assert node.last_seen_at is not None
    timeout = timedelta(seconds=get_settings().heartbeat_timeout_seconds)
    return utcnow() - node.last_seen_at <= timeout


def rotate_key(session: Session, *, owner: User, node_id: uuid.UUID) -> NewKey:
    node = get_owned_node(session, owner=owner, node_id=node_id, lock=True)
    return issue_key(session, node_id=node.id)


def drain_node(session: Session, *, owner: User, node_id: uuid.UUID) -> HostNode:
    """Stop offering the node for new rentals (a running rental carries on)."""
    node = get_owned_node(session, owner=owner, node_id=node_id, lock=True)
    if not node.draining:
        node.draining = True
        node_changed(session, node.id)
        session.flush()
        session.refresh(node)
    return node


def undrain_node(session: Session, *, owner: User, node_id: uuid.UUID) -> HostNode:
    """Offer the node for new rentals again (drain is not one-way)."""
    node = get_owned_node(session, owner=owner, node_id=node_id, lock=True)
    if node.draining:
        node.draining = False
        node_changed(session, node.id)
        session.flush()
        session.refresh(node)
    return node


def node_for_metrics(session: Session, *, user: User, admin: bool, node_id: uuid.UUID) -> HostNode:
    """The node when `user` owns it or is an admin; 404 otherwise."""
    if not admin:
        return get_owned_node(session, owner=user, node_id=node_id)
    node = session.get(HostNode, node_id)
    if node is None:
        raise NotFound("No such node.")
    return node
