"""Signals about node changes that other domains react to (the marketplace's offers cache)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.marketplace.cache import invalidate_offers_after_commit


def node_changed(session: Session, node_id: uuid.UUID) -> None:
    """Mark that a node's searchable state changed; cached offers go stale once this commits.

    A change inside a savepoint that rolls back invalidates nothing, and nothing is invalidated
    before the real commit.
    """
    invalidate_offers_after_commit(session)
