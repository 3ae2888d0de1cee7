"""Liveness: last seen flushed in batches, silent nodes offline, heard ones back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from app.enums import NodeStatus, RentalStatus
from app.fleet import live
from app.fleet.actors import check_node_liveness, liveness_interval
from app.redis_client import get_redis
from tests.fleet.helpers import history, make_rental, node_row, set_node
from tests.procs import wait_until

TIMEOUT = 20  # HEARTBEAT_TIMEOUT_SECONDS in the test settings


def _seen(*node_ids, at: float | None = None) -> None:
    now = time.time() if at is None else at
    live.write_sightings(get_redis(), [live.Sighting(str(n), now, "online") for n in node_ids])


def test_silent_node_goes_offline_and_comes_back_on_its_next_heartbeat(agents, node, fleet_worker):
    agent = agents(node).connect()
    agent.heartbeat()
    wait_until(lambda: node_row(node.id).status == NodeStatus.ONLINE, 10, what="online")

    check_node_liveness.fn(now=time.time() + TIMEOUT + 1)  # the agent has been silent since
    assert node_row(node.id).status == NodeStatus.OFFLINE

    agent.heartbeat()  # the socket asks a worker to bring it back without waiting for a sweep
    wait_until(lambda: node_row(node.id).status == NodeStatus.ONLINE, 10, what="back online")
    assert history(node.id) == [
        (NodeStatus.ONLINE, "agent connected"),
        (NodeStatus.OFFLINE, f"no heartbeat for {TIMEOUT}s"),
        (NodeStatus.ONLINE, "heartbeats resumed"),
    ]


def test_liveness_job_flushes_last_seen_to_postgres_in_one_pass(register_node, user):
    nodes = [register_node(user) for _ in range(3)]
    at = time.time() - 3
    _seen(*(n.id for n in nodes), at=at)

    check_node_liveness.fn()

    for n in nodes:
        seen = node_row(n.id).last_seen_at
        assert seen is not None and abs(seen.timestamp() - at) < 0.01


def test_last_seen_never_moves_backwards(node):
    later = datetime.now(UTC) + timedelta(minutes=5)
    set_node(node.id, last_seen_at=later)
    _seen(node.id)
    check_node_liveness.fn()
    assert node_row(node.id).last_seen_at == later


def test_offline_node_heard_from_is_brought_back_by_the_sweep_too(node):
    _seen(node.id)  # e.g. the prompt path's message was lost
    check_node_liveness.fn()
    assert node_row(node.id).status == NodeStatus.ONLINE
    assert history(node.id) == [(NodeStatus.ONLINE, "heartbeats resumed")]


def test_node_never_seen_stays_offline_without_history(node):
    check_node_liveness.fn()
    assert node_row(node.id).status == NodeStatus.OFFLINE
    assert history(node.id) == []


def test_busy_and_maintenance_nodes_go_offline_and_come_back_as_they_were(
    register_node, user, other_user
):
    busy, resting = register_node(user), register_node(user)
    make_rental(busy.id, other_user.id, status=RentalStatus.ACTIVE)
    _seen(busy.id, resting.id)
    set_node(resting.id, maintenance=True)
    check_node_liveness.fn()
    assert node_row(busy.id).status == NodeStatus.BUSY
    assert node_row(resting.id).status == NodeStatus.MAINTENANCE

    check_node_liveness.fn(now=time.time() + TIMEOUT + 1)
    assert node_row(busy.id).status == NodeStatus.OFFLINE
    assert node_row(resting.id).status == NodeStatus.OFFLINE
    assert get_redis().sismember(live.OFFLINE_SET, str(busy.id))
    assert get_redis().hget(live.live_key(str(busy.id)), "status") == "offline"

    _seen(busy.id, resting.id)
    check_node_liveness.fn()
    assert node_row(busy.id).status == NodeStatus.BUSY
    assert node_row(resting.id).status == NodeStatus.MAINTENANCE
    assert [s for s, _ in history(busy.id)] == [
        NodeStatus.BUSY,
        NodeStatus.OFFLINE,
        NodeStatus.BUSY,
    ]


def test_liveness_runs_often_enough_for_the_timeout(settings):
    assert liveness_interval(settings) <= TIMEOUT / 4
    from app.actors import periodic_jobs

    assert check_node_liveness in [actor for actor, _ in periodic_jobs()]
