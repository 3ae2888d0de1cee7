"""Node API keys: random, prefixed `dcn_`, shown once, stored as a SHA-256 hash, rotatable.

The key carries 256 bits of randomness, so a fast hash is enough (no password stretching); the
lookup goes by a short public prefix and the hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.fleet.models import NodeApiKey

KEY_PREFIX = "dcn_"
LOOKUP_LEN = 12  # characters after "dcn_" used to find the row


@dataclass(frozen=True)
class NewKey:
    key: str
    record: NodeApiKey


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _lookup_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + LOOKUP_LEN]


def issue_key(session: Session, *, node_id: uuid.UUID) -> NewKey:
    """Revoke the node's current keys and create a new one (the plain key is returned once)."""
    session.execute(
        update(NodeApiKey)
        .where(NodeApiKey.node_id == node_id, NodeApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = NodeApiKey(node_id=node_id, prefix=_lookup_prefix(key), key_hash=hash_key(key))
    session.add(record)
    session.flush()
    return NewKey(key=key, record=record)


def verify_key(session: Session, key: str | None) -> uuid.UUID | None:
    """The node id the key belongs to, or None for a missing, unknown or revoked key."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    row = session.execute(
        select(NodeApiKey.node_id, NodeApiKey.key_hash, NodeApiKey.revoked_at).where(
            NodeApiKey.prefix == _lookup_prefix(key)
        )
    ).first()
    candidate = hash_key(key)
    if row is None:
        hmac.compare_digest(candidate, candidate)  # same work whether or not the prefix exists
        return None
    if not hmac.compare_digest(row.key_hash, candidate) or row.revoked_at is not None:
        return None
    return row.node_id
