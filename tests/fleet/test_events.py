"""The offers cache is invalidated once per committed change, never before the commit."""

from __future__ import annotations

from app.db import new_session
from app.fleet.events import node_changed
from app.marketplace.cache import OFFERS_VERSION_KEY
from app.redis_client import get_redis


def _version() -> int:
    return int(get_redis().get(OFFERS_VERSION_KEY) or 0)


def test_a_committed_change_bumps_the_offers_version_once_after_commit(node):
    before = _version()
    with new_session() as session:
        node_changed(session, node.id)
        node_changed(session, node.id)
        assert _version() == before  # nothing before the commit
        session.commit()
    assert _version() == before + 1


def test_a_change_inside_a_rolled_back_savepoint_invalidates_nothing(node):
    before = _version()
    with new_session() as session:
        savepoint = session.begin_nested()
        node_changed(session, node.id)
        savepoint.rollback()
        session.commit()
    assert _version() == before


def test_a_rolled_back_transaction_invalidates_nothing(node):
    before = _version()
    with new_session() as session:
        node_changed(session, node.id)
        session.rollback()
    assert _version() == before
