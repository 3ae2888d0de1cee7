"""Public ports and the frps server plugin. Functions never commit.

Ports: every public port comes from PROXY_PORT_RANGE and is held by at most one live allocation
(the partial unique index on `port WHERE released_at IS NULL`); allocation picks a random free
port that no concurrent allocator is claiming, and lets the index settle any remaining race.

frps: the shared `auth.token` proves only that a client knows the platform's frps; which node it
is comes from the Login `metas` (see docs/frp.md): `node_id`, `key_id` (the node's current API key
record) and `node_token`, an HMAC the platform computes from FRPS_PLUGIN_SECRET and hands to the
agent inside `start_instance`. The node's API key itself never leaves the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.enums import RentalStatus
from app.fleet.models import HostNode, NodeApiKey
from app.proxy.models import PortAllocation
from app.rentals.models import Rental

USER_PREFIX = "node-"
# Two allocators must never wait on each other's uncommitted rows (two multi-port rentals would
# deadlock): each candidate port is claimed first with a non-blocking transaction-scoped advisory
# lock, taken lazily in random order until one succeeds; the insert then cannot meet an
# uncommitted row for that port, only a committed one (ON CONFLICT: try again).
ADVISORY_NAMESPACE = 0x44430001
# MATERIALIZED keeps the lock out of the scan of free ports: pushed down there, it would lock
# every free port at once.
_CANDIDATE = text("""
    WITH free AS MATERIALIZED (
        SELECT p FROM generate_series(CAST(:low AS integer), CAST(:high AS integer)) AS p
        WHERE NOT EXISTS (SELECT 1 FROM port_allocations a
                          WHERE a.port = p AND a.released_at IS NULL)
        ORDER BY random()
    )
    SELECT p FROM free WHERE pg_try_advisory_xact_lock(CAST(:ns AS integer), p) LIMIT 1
""")
_INSERT = text("""
    INSERT INTO port_allocations (port, container_port, node_id, rental_id)
    VALUES (:port, :container_port, :node_id, :rental_id)
    ON CONFLICT (port) WHERE released_at IS NULL DO NOTHING
    RETURNING port
""")
_ANY_FREE = text("""
    SELECT EXISTS (
        SELECT 1 FROM generate_series(CAST(:low AS integer), CAST(:high AS integer)) AS p
        WHERE NOT EXISTS (SELECT 1 FROM port_allocations a
                          WHERE a.port = p AND a.released_at IS NULL))
""")
MAX_ATTEMPTS = 50


class PortPoolExhausted(Exception):
    """Every port of PROXY_PORT_RANGE is allocated."""


def live_ports(session: Session, *, rental_id: uuid.UUID) -> dict[int, int]:
    """{container port: public port} of the rental's unreleased allocations."""
    rows = session.execute(
        select(PortAllocation.container_port, PortAllocation.port).where(
            PortAllocation.rental_id == rental_id, PortAllocation.released_at.is_(None)
        )
    ).all()
    return {row.container_port: row.port for row in rows}


def allocate_ports(
    session: Session, *, rental: Rental, port_range: tuple[int, int]
) -> dict[int, int]:
    """Give each of the rental's container ports a public port; keep those it already has."""
    low, high = port_range
    mapping = live_ports(session, rental_id=rental.id)
    for container_port in rental.ports:
        if container_port in mapping:
            continue
        for _attempt in range(MAX_ATTEMPTS):
            candidate = session.execute(
                _CANDIDATE, {"low": low, "high": high, "ns": ADVISORY_NAMESPACE}
            ).scalar()
            if candidate is not None:
                port = session.execute(
                    _INSERT,
                    {
                        "port": candidate,
                        "container_port": container_port,
                        "node_id": rental.node_id,
                        "rental_id": rental.id,
                    },
                ).scalar()
                if port is not None:
                    mapping[container_port] = port
                    break
            elif not session.execute(_ANY_FREE, {"low": low, "high": high}).scalar():
                raise PortPoolExhausted(f"no free public port in {low}-{high}")
            else:
                time.sleep(0.02)  # every free port is being claimed right now: let them finish
        else:
            raise PortPoolExhausted(f"no public port could be allocated in {low}-{high}")
    return mapping


def release_ports(session: Session, *, rental_id: uuid.UUID) -> int:
    """Give the rental's public ports back to the pool; returns how many were released."""
    result = session.execute(
        update(PortAllocation)
        .where(PortAllocation.rental_id == rental_id, PortAllocation.released_at.is_(None))
        .values(released_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def quarantine_ports(session: Session, *, rental_id: uuid.UUID, until: datetime) -> int:
    """Keep the ended rental's ports out of the pool until `until`: its container and tunnel may
    still run (frpc has its own connection to frps), so a new rental must not get them yet.

    The ports stay allocated (not released), so neither the pool nor frps hands them out: frps
    only opens a port for a live rental. Returns how many were quarantined.
    """
    result = session.execute(
        update(PortAllocation)
        .where(PortAllocation.rental_id == rental_id, PortAllocation.released_at.is_(None))
        .values(quarantined_until=until)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def quarantined_rentals(session: Session, *, node_id: uuid.UUID) -> set[uuid.UUID]:
    """The ended rentals of the node whose ports are still quarantined."""
    return set(
        session.execute(
            select(PortAllocation.rental_id).where(
                PortAllocation.node_id == node_id,
                PortAllocation.released_at.is_(None),
                PortAllocation.quarantined_until.is_not(None),
            )
        ).scalars()
    )


def release_quarantine(session: Session, *, rental_ids: Iterable[uuid.UUID]) -> int:
    """The rentals' containers are known to be gone: their quarantined ports go back."""
    ids = list(rental_ids)
    if not ids:
        return 0
    result = session.execute(
        update(PortAllocation)
        .where(
            PortAllocation.rental_id.in_(ids),
            PortAllocation.released_at.is_(None),
            PortAllocation.quarantined_until.is_not(None),
        )
        .values(released_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def release_expired_quarantine(session: Session, *, now: datetime) -> list[uuid.UUID]:
    """Release every quarantine past its safety period; return the nodes concerned."""
    rows = session.execute(
        update(PortAllocation)
        .where(
            PortAllocation.released_at.is_(None),
            PortAllocation.quarantined_until.is_not(None),
            PortAllocation.quarantined_until <= now,
        )
        .values(released_at=now)
        .returning(PortAllocation.node_id)
    ).scalars()
    return sorted(set(rows))


def ports_held_by(session: Session, *, renter_id: uuid.UUID) -> int:
    """Public ports held by the renter's live rentals (allocated, or asked for and not yet)."""
    return int(
        session.execute(
            select(func.coalesce(func.sum(func.jsonb_array_length(Rental.ports)), 0)).where(
                Rental.renter_id == renter_id,
                Rental.status.in_([RentalStatus.PENDING, RentalStatus.ACTIVE]),
            )
        ).scalar_one()
    )


# ---------------------------------------------------------------------------- tunnel identity
def node_token(secret: str, node_id: uuid.UUID | str, key_id: uuid.UUID | str) -> str:
    message = f"dc-frp-login:{node_id}:{key_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def tunnel_settings(session: Session, *, node_id: uuid.UUID, settings: Any) -> dict[str, Any]:
    """The `tunnel` block for the node's agent: where frps is and how the node proves itself.

    The same for every rental of the node (until its API key is rotated), so the agent's frpc
    config does not change between rentals.
    """
    key_id = session.execute(
        select(NodeApiKey.id)
        .where(NodeApiKey.node_id == node_id, NodeApiKey.revoked_at.is_(None))
        .order_by(NodeApiKey.created_at.desc())
        .limit(1)
    ).scalar()
    metadatas = {"node_id": str(node_id)}
    if key_id is not None:
        metadatas["key_id"] = str(key_id)
        metadatas["node_token"] = node_token(settings.frps_plugin_secret, node_id, key_id)
    return {
        "server_addr": settings.frps_addr,
        "server_port": settings.frps_port,
        "token": settings.frps_token,
        "user": f"{USER_PREFIX}{node_id}",
        "metadatas": metadatas,
    }


# ---------------------------------------------------------------------------- frps plugin
@dataclass(frozen=True)
class Verdict:
    allow: bool
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        if self.allow:
            return {"reject": False, "unchange": True}
        return {"reject": True, "reject_reason": self.reason or "rejected"}


def _reject(reason: str) -> Verdict:
    return Verdict(False, reason)


def _node_of_user(user: Any) -> uuid.UUID | None:
    if not isinstance(user, str) or not user.startswith(USER_PREFIX):
        return None
    try:
        return uuid.UUID(user[len(USER_PREFIX) :])
    except ValueError:
        return None


def _verify_identity(
    session: Session, *, user: Any, metas: Any, secret: str
) -> uuid.UUID | Verdict:
    """The node id a (user, metas) pair proves, or the rejection."""
    node_id = _node_of_user(user)
    if node_id is None:
        return _reject("user must be node-<node id>")
    if not isinstance(metas, dict):
        return _reject("metas must carry node_id, key_id and node_token")
    key_id, token = metas.get("key_id"), metas.get("node_token")
    if metas.get("node_id") != str(node_id):
        return _reject("metas.node_id does not match the user")
    if not isinstance(key_id, str) or not isinstance(token, str):
        return _reject("metas must carry key_id and node_token")
    try:
        key_uuid = uuid.UUID(key_id)
    except ValueError:
        return _reject("metas.key_id is not valid")
    expected = node_token(secret, node_id, key_uuid)
    if not hmac.compare_digest(expected, token):
        return _reject("unknown node or bad node_token")
    row = session.execute(
        select(NodeApiKey.revoked_at)
        .join(HostNode, HostNode.id == NodeApiKey.node_id)
        .where(NodeApiKey.id == key_uuid, NodeApiKey.node_id == node_id)
    ).first()
    if row is None:
        return _reject("unknown node")
    if row.revoked_at is not None:
        return _reject("the node's key was revoked; restart the rental's tunnel")
    return node_id


def login(session: Session, *, content: dict[str, Any], secret: str) -> Verdict:
    identity = _verify_identity(
        session, user=content.get("user"), metas=content.get("metas"), secret=secret
    )
    return identity if isinstance(identity, Verdict) else Verdict(True)


def new_proxy(session: Session, *, content: dict[str, Any], secret: str) -> Verdict:
    user = content.get("user")
    if not isinstance(user, dict):
        return _reject("content.user is missing")
    identity = _verify_identity(
        session, user=user.get("user"), metas=user.get("metas"), secret=secret
    )
    if isinstance(identity, Verdict):
        return identity
    node_id = identity
    if content.get("proxy_type") != "tcp":
        return _reject("only tcp proxies are allowed")
    remote_port = content.get("remote_port")
    if isinstance(remote_port, bool) or not isinstance(remote_port, int) or remote_port <= 0:
        return _reject("remote_port must be a port allocated by the platform")
    proxy_name = content.get("proxy_name")
    allocation = session.execute(
        select(PortAllocation)
        .join(Rental, Rental.id == PortAllocation.rental_id)
        .where(
            PortAllocation.port == remote_port,
            PortAllocation.released_at.is_(None),
            PortAllocation.node_id == node_id,
            Rental.status.in_([RentalStatus.PENDING, RentalStatus.ACTIVE]),
        )
        .with_for_update(of=PortAllocation)
    ).scalar_one_or_none()
    if allocation is None:
        return _reject(f"port {remote_port} is not allocated to a live rental of this node")
    allocation.proxy_name = proxy_name[:200] if isinstance(proxy_name, str) else None
    allocation.proxy_opened_at = utcnow()
    allocation.proxy_closed_at = None
    return Verdict(True)


def close_proxy(session: Session, *, content: dict[str, Any], secret: str) -> Verdict:
    """Record that a proxy closed; only the proxy's own node (proven as for NewProxy) may."""
    user = content.get("user")
    if not isinstance(user, dict):
        return _reject("content.user is missing")
    identity = _verify_identity(
        session, user=user.get("user"), metas=user.get("metas"), secret=secret
    )
    if isinstance(identity, Verdict):
        return identity
    node_id = identity
    proxy_name = content.get("proxy_name")
    if isinstance(proxy_name, str):
        session.execute(
            update(PortAllocation)
            .where(
                PortAllocation.node_id == node_id,
                PortAllocation.proxy_name == proxy_name[:200],
                PortAllocation.proxy_opened_at.is_not(None),
                PortAllocation.proxy_closed_at.is_(None),
            )
            .values(proxy_closed_at=utcnow())
        )
    return Verdict(True)  # frps ignores the answer to CloseProxy (it only logs a rejection)
