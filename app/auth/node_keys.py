"""Node API keys: random, prefixed `dcn_`, shown once, stored as a SHA-256 hash, rotatable.

How the keys are made and hashed is shared with user API keys (app/auth/keys.py).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Session

from app.auth.keys import NODE_KEYS, hash_key
from app.db import utcnow
from app.fleet.models import HostNode, NodeApiKey

KEY_PREFIX = NODE_KEYS.prefix


@dataclass(frozen=True)
class NewKey:
    key: str
    record: NodeApiKey


def issue_key(session: Session, *, node_id: uuid.UUID) -> NewKey:
    """Revoke the node's current keys and create a new one (the plain key is returned once)."""
    session.execute(
        update(NodeApiKey)
        .where(NodeApiKey.node_id == node_id, NodeApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    issued = NODE_KEYS.issue()
    record = NodeApiKey(node_id=node_id, prefix=issued.lookup, key_hash=issued.key_hash)
    session.add(record)
    session.flush()
    return NewKey(key=issued.key, record=record)


def verify_key(session: Session, key: str | None) -> uuid.UUID | None:
    """The node id the key belongs to, or None for a missing, unknown or revoked key."""
    found = verify_node_key(session, key)
    return found.node_id if found is not None else None


class NodeKeyMatch(NamedTuple):
    node_id: uuid.UUID
    key_id: uuid.UUID  # the key record's id
    draining: bool  # the node's, read in the same statement (the agent's welcome says it)


def verify_node_key(session: Session, key: str | None) -> NodeKeyMatch | None:
    """The node of a valid key, or None for a missing, unknown or revoked key."""
    if key is None or not NODE_KEYS.looks_like(key):
        return None
    row = session.execute(
        select(
            NodeApiKey.id,
            NodeApiKey.node_id,
            NodeApiKey.key_hash,
            NodeApiKey.revoked_at,
            HostNode.draining,
        )
        .join(HostNode, HostNode.id == NodeApiKey.node_id)
        .where(NodeApiKey.prefix == NODE_KEYS.lookup(key))
    ).first()
    candidate = hash_key(key)
    if row is None:
        hmac.compare_digest(candidate, candidate)  # same work whether or not the prefix exists
        return None
    if not hmac.compare_digest(row.key_hash, candidate) or row.revoked_at is not None:
        return None
    return NodeKeyMatch(row.node_id, row.id, bool(row.draining))


def dead_key_ids(session: Session, key_ids: Iterable[str]) -> set[str]:
    """Those of `key_ids` (as text) that are revoked or gone: usually none, so only they come
    back (a periodic check over every connected agent's key)."""
    ids = list(key_ids)
    if not ids:
        return set()
    key = func.unnest(cast(bindparam("ids", ids), ARRAY(UUID(as_uuid=False)))).column_valued("k")
    live = select(NodeApiKey.id).where(NodeApiKey.id == key, NodeApiKey.revoked_at.is_(None))
    return {str(k) for k in session.execute(select(key).where(~live.exists())).scalars()}
