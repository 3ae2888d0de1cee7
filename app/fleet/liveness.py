"""Worker-side node state from the agent's connection: hello, last seen, offline and back.

Functions never commit; the actors in app/fleet/actors.py own the units of work. Every status change
goes through :func:`app.fleet.state.transition_node`, which records the history.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, column, or_, select, update, values
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session

from app.enums import NodeStatus
from app.fleet.capacity import is_full
from app.fleet.events import node_changed
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.proxy.service import quarantined_rentals, release_quarantine
from app.rentals.service import live_rentals_for_node

# Declared sizes are nominal; what an OS or NVML reports is a little less (64 GB of RAM shows as
# about 62.8, a 24 GB card as 23.99, a 1 TB disk as 931 GiB), so sizes get this much slack.
SIZE_TOLERANCE = 0.9
FLUSH_CHUNK = 1000


def specs_cover(declared: Mapping[str, Any], detected: Mapping[str, Any]) -> bool:
    """Whether the detected hardware is at least what the host declared."""

    def at_least(name: str, slack: float = 1.0) -> bool:
        want = float(declared.get(name) or 0)
        return float(detected.get(name) or 0) >= want * slack

    if not at_least("gpu_count") or not at_least("cpu_cores"):
        return False
    if int(declared.get("gpu_count") or 0) > 0 and not at_least("gpu_vram_gb", SIZE_TOLERANCE):
        return False
    return at_least("ram_gb", SIZE_TOLERANCE) and at_least("disk_gb", SIZE_TOLERANCE)


def status_when_seen(session: Session, node: HostNode) -> NodeStatus:
    """Where a node that is heard from again belongs: busy when its rentals hold every GPU,
    maintenance, online."""
    if is_full(node):
        return NodeStatus.BUSY
    if node.maintenance:
        return NodeStatus.MAINTENANCE
    return NodeStatus.ONLINE


def apply_hello(
    session: Session,
    *,
    node: HostNode,
    specs: dict[str, Any],
    agent_version: str,
    seen_at: datetime,
    timeout_seconds: int,
    now: datetime,
) -> None:
    """Record the detected specs and bring the node back if it was offline.

    `verified` comes from the self-test (app/fleet/selftest.py); a hello can only take it away,
    when the agent itself reports less than the host declared. `node` must be locked by the caller.
    """
    detected = {**specs, "agent_version": agent_version}
    verified = node.verified and specs_cover(node.specs, specs)
    if node.detected_specs != detected or node.verified != verified:
        node.detected_specs = detected
        node.verified = verified
        node_changed(session, node.id)
    if node.last_seen_at is None or node.last_seen_at < seen_at:
        node.last_seen_at = seen_at
    if node.status == NodeStatus.OFFLINE and now - seen_at <= timedelta(seconds=timeout_seconds):
        transition_node(session, node, status_when_seen(session, node), reason="agent connected")


def stale_containers(
    session: Session, *, node_id: uuid.UUID, containers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The reported containers whose rental is not live on this node, or not with this id."""
    live = {str(r.id): r.container_id for r in live_rentals_for_node(session, node_id)}
    stale = []
    for container in containers:
        rental_id = str(container.get("rental_id"))
        if rental_id not in live or (
            live[rental_id] and container.get("container_id") != live[rental_id]
        ):
            stale.append(container)
    return stale


def reconcile(session: Session, *, node: HostNode, containers: list[dict[str, Any]]) -> int:
    """The agent reported every container it has: the quarantined ports of ended rentals that it
    no longer runs go back to the pool (the others wait for their `instance_stopped`), and the
    node's `needs_reconcile` flag is cleared once none is left. `node` must be locked.

    Returns how many rentals' ports were released.
    """
    quarantined = quarantined_rentals(session, node_id=node.id)
    reported = {str(c.get("rental_id")) for c in containers}
    gone = [rental_id for rental_id in quarantined if str(rental_id) not in reported]
    release_quarantine(session, rental_ids=gone)
    if len(gone) == len(quarantined):
        clear_reconcile(session, node)
    return len(gone)


def clear_reconcile(session: Session, node: HostNode) -> None:
    """Clear the node's `needs_reconcile` flag if none of its ports is quarantined any more."""
    if node.needs_reconcile and not quarantined_rentals(session, node_id=node.id):
        node.needs_reconcile = False
        node_changed(session, node.id)


def flush_last_seen(session: Session, seen: Mapping[str, float]) -> int:
    """Write last_seen_at for many nodes, one statement per chunk; never move it backwards."""
    rows = []
    for node_id, at in seen.items():
        try:
            rows.append((uuid.UUID(node_id), datetime.fromtimestamp(at, UTC)))
        except ValueError:
            continue
    updated = 0
    for start in range(0, len(rows), FLUSH_CHUNK):
        chunk = values(
            column("id", UUID(as_uuid=True)), column("seen", DateTime(timezone=True)), name="seen"
        ).data(rows[start : start + FLUSH_CHUNK])
        result = session.execute(
            update(HostNode)
            .where(
                HostNode.id == chunk.c.id,
                or_(HostNode.last_seen_at.is_(None), HostNode.last_seen_at < chunk.c.seen),
            )
            # Keep updated_at: being seen is not an edit of the node.
            .values(last_seen_at=chunk.c.seen, updated_at=HostNode.updated_at)
            .execution_options(synchronize_session=False)
        )
        updated += result.rowcount or 0  # type: ignore[attr-defined]
    return updated


def mark_silent_offline(
    session: Session, *, cutoff: datetime, timeout_seconds: int
) -> list[uuid.UUID]:
    """Mark offline every node not heard from since `cutoff`; return their ids."""
    nodes = (
        session.execute(
            select(HostNode)
            .where(
                HostNode.status != NodeStatus.OFFLINE,
                or_(HostNode.last_seen_at.is_(None), HostNode.last_seen_at < cutoff),
            )
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for node in nodes:
        transition_node(
            session, node, NodeStatus.OFFLINE, reason=f"no heartbeat for {timeout_seconds}s"
        )
    return [node.id for node in nodes]


def revive_seen(session: Session, *, cutoff: datetime) -> list[uuid.UUID]:
    """Bring back every offline node heard from since `cutoff`; return their ids."""
    nodes = (
        session.execute(
            select(HostNode)
            .where(HostNode.status == NodeStatus.OFFLINE, HostNode.last_seen_at >= cutoff)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for node in nodes:
        transition_node(session, node, status_when_seen(session, node), reason="heartbeats resumed")
    return [node.id for node in nodes]


def node_seen(session: Session, *, node_id: uuid.UUID, seen_at: datetime, cutoff: datetime) -> bool:
    """An offline node was heard from at `seen_at`: record it and bring it back if recent."""
    node = session.get(HostNode, node_id, with_for_update=True)
    if node is None:
        return False
    if node.last_seen_at is None or node.last_seen_at < seen_at:
        node.last_seen_at = seen_at
    if node.status != NodeStatus.OFFLINE or seen_at < cutoff:
        return False
    return transition_node(
        session, node, status_when_seen(session, node), reason="heartbeats resumed"
    )
