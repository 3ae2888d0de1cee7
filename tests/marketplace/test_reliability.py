"""Reliability: the 7-day uptime fraction from the status history, materialised for search."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import delete, select, update

from app.db import session_scope, utcnow
from app.enums import NodeStatus
from app.fleet.models import HostNode, NodeStatusEvent
from app.marketplace.models import NodeReliability
from app.marketplace.reliability import refresh_reliability
from tests.marketplace.market import add_node


def _history(node_id, created_days_ago, events, now):
    """Replace the node's history: events are (days ago, status)."""
    with session_scope() as session:
        session.execute(
            update(HostNode)
            .where(HostNode.id == node_id)
            .values(created_at=now - timedelta(days=created_days_ago))
        )
        session.execute(delete(NodeStatusEvent).where(NodeStatusEvent.node_id == node_id))
        for days_ago, status in events:
            session.add(
                NodeStatusEvent(node_id=node_id, status=status, at=now - timedelta(days=days_ago))
            )


def _reliability(node_id):
    with session_scope() as session:
        return session.execute(
            select(NodeReliability.reliability).where(NodeReliability.node_id == node_id)
        ).scalar_one()


def test_reliability_is_the_up_fraction_of_the_last_seven_days(user):
    now = utcnow()
    node = add_node(user.id)
    # Online from before the window, offline for 2.5 days, then busy (up) for the last day.
    _history(
        node, 30, [(8, NodeStatus.ONLINE), (3.5, NodeStatus.OFFLINE), (1, NodeStatus.BUSY)], now
    )
    with session_scope() as session:
        assert refresh_reliability(session, now=now) == 1
    assert _reliability(node) == Decimal("0.6429")  # (3.5 + 1) / 7


def test_maintenance_and_offline_count_as_down_and_a_young_node_is_judged_on_its_life(user):
    now = utcnow()
    young = add_node(user.id, name="young")
    _history(young, 2, [(2, NodeStatus.ONLINE), (1, NodeStatus.MAINTENANCE)], now)
    never = add_node(user.id, name="never", status=NodeStatus.OFFLINE)
    _history(never, 10, [], now)
    with session_scope() as session:
        refresh_reliability(session, now=now)
    assert _reliability(young) == Decimal("0.5000")
    assert _reliability(never) == Decimal("0.0000")


def test_refreshing_again_updates_the_figure(user):
    now = utcnow()
    node = add_node(user.id)
    _history(node, 10, [(10, NodeStatus.ONLINE)], now)
    with session_scope() as session:
        refresh_reliability(session, now=now)
    assert _reliability(node) == Decimal("1.0000")
    _history(node, 10, [(10, NodeStatus.ONLINE), (7 / 4, NodeStatus.OFFLINE)], now)
    with session_scope() as session:
        refresh_reliability(session, now=now)
    assert _reliability(node) == Decimal("0.7500")


def test_offers_show_reliability_after_the_job_and_can_be_filtered_by_it(client, user):
    from app.pricing.actors import refresh_node_reliability

    now = utcnow()
    steady = add_node(user.id, name="steady", rate="1.0000")
    flaky = add_node(user.id, name="flaky", rate="0.5000")
    _history(steady, 10, [(10, NodeStatus.ONLINE)], now)
    _history(
        flaky, 10, [(10, NodeStatus.ONLINE), (6, NodeStatus.OFFLINE), (0.5, NodeStatus.ONLINE)], now
    )
    before = client.get("/api/v1/offers", headers=user.headers).json
    assert [i["reliability"] for i in before["items"]] == [None, None]
    refresh_node_reliability.fn()
    after = client.get("/api/v1/offers", headers=user.headers).json
    figures = {i["node_id"]: i["reliability"] for i in after["items"]}
    assert figures[str(steady)] == 1.0
    assert 0.2 < figures[str(flaky)] < 0.22  # (1 + 0.5) / 7
    good = client.get(
        "/api/v1/offers", query_string={"q": "reliability>=0.9"}, headers=user.headers
    ).json
    assert [i["node_id"] for i in good["items"]] == [str(steady)]
