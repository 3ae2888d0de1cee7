"""Signals about node changes that other domains react to (the offers cache, for one)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
OFFERS_VERSION_KEY = "dc:offers:version"
_FLAG = "dc_nodes_changed"


def node_changed(session: Session, node_id: uuid.UUID) -> None:
    """Mark that a node's searchable state changed; caches are invalidated after commit."""
    session.info.setdefault(_FLAG, set()).add(node_id)


def bump_offers_version() -> None:
    from app.redis_client import get_redis

    get_redis().incr(OFFERS_VERSION_KEY)


@event.listens_for(Session, "after_commit")
def _invalidate(session: Session) -> None:
    if session.info.pop(_FLAG, None):
        try:
            bump_offers_version()
        except Exception:  # cached entries also expire by TTL
            log.exception("could not invalidate the offers cache")


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_FLAG, None)
