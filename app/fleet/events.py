"""Signals about node changes that other domains react to (the offers cache, for one)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from app.web import PENDING_KEY, enqueue_after_commit

log = logging.getLogger(__name__)
OFFERS_VERSION_KEY = "dc:offers:version"


def bump_offers_version() -> None:
    from app.redis_client import get_redis

    get_redis().incr(OFFERS_VERSION_KEY)


class _OffersCacheInvalidation:
    """Sent after commit like a message: bumps the offers version once per transaction."""

    actor_name = "invalidate_offers_cache"

    @staticmethod
    def send() -> None:
        try:
            bump_offers_version()
        except Exception:  # cached entries also expire by TTL
            log.exception("could not invalidate the offers cache")


_INVALIDATION = _OffersCacheInvalidation()


def node_changed(session: Session, node_id: uuid.UUID) -> None:
    """Mark that a node's searchable state changed; caches are invalidated after commit.

    Goes through the after-commit queue, so a change inside a savepoint that rolls back
    invalidates nothing, and nothing is invalidated before the real commit.
    """
    pending = session.info.get(PENDING_KEY, ())
    if not any(item[0] is _INVALIDATION for item in pending):
        enqueue_after_commit(session, _INVALIDATION)
