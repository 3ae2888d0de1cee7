"""What a hostile agent can make the platform store, and what it cannot keep running."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from app.auth.node_keys import issue_key
from app.db import session_scope
from app.enums import RentalStatus
from app.fleet import commands
from app.redis_client import get_redis
from tests.fleet.agent_sim import pending_besides_self_test
from tests.fleet.helpers import make_rental, node_row
from tests.procs import Proc, running, wait_until, worker_process

STREAM_MAX = 1000  # NODE_COMMAND_STREAM_MAX's default


def _containers(count: int) -> list[dict[str, str]]:
    return [
        {"rental_id": str(uuid.uuid4()), "container_id": uuid.uuid4().hex, "state": "running"}
        for _ in range(count)
    ]


def _fleet_queue_drained() -> bool:
    return get_redis().hlen("dramatiq:fleet.msgs") == 0


def _stream_bytes(node_id: uuid.UUID) -> int:
    r = get_redis()
    node = str(node_id)
    keys = [
        commands.stream_key(node),
        commands.index_key(node),
        commands.supersede_key(node),
        commands.disposable_key(node),
    ]
    return sum(int(r.memory_usage(key, samples=0) or 0) for key in keys)


@pytest.fixture
def rentals_worker(_database) -> Iterator[Proc]:
    """A worker for the rentals queue, gone when the test ends (no other package sees it)."""
    proc = worker_process(name="abuse-rentals-worker", threads=2)
    proc.argv += ["--queues", "rentals"]
    with running(proc):
        yield proc


def test_a_second_hello_on_one_connection_is_refused_and_stores_nothing(agents, node, fleet_worker):
    agent = agents(node).connect(containers=[])
    agent.hello(containers=_containers(5))
    error = agent.recv_event("error")
    assert error["data"]["code"] == "hello_repeated"
    wait_until(_fleet_queue_drained, 10, what="the fleet queue drained")
    time.sleep(0.5)
    assert len(pending_besides_self_test(node.id)) == 0


def test_a_hello_reporting_more_containers_than_allowed_is_refused_whole(
    agents, node, fleet_worker
):
    agent = agents(node).connect(hello=False)
    agent.hello(containers=_containers(501))
    assert agent.recv_event("error")["data"]["code"] == "too_many_containers"
    agent.heartbeat()  # not ready: the hello did not count
    assert agent.recv_event("error")["data"]["code"] == "hello_expected"
    assert len(pending_besides_self_test(node.id)) == 0
    assert node_row(node.id).detected_specs is None


def test_unknown_containers_reported_in_every_hello_get_one_pending_stop_each(
    agents, node, fleet_worker
):
    same = _containers(300)
    for _ in range(3):
        agents(node).connect(containers=same).close()
    wait_until(_fleet_queue_drained, 30, what="the hellos recorded")
    wait_until(lambda: len(pending_besides_self_test(node.id)) == 300, 10, what="300 stops")
    time.sleep(0.5)
    assert len(pending_besides_self_test(node.id)) == 300


def test_two_hundred_hellos_of_500_unknown_containers_leave_the_stream_bounded(
    agents, node, fleet_worker
):
    rental = str(uuid.uuid4())
    start = {"rental_id": rental, "image": "localhost/busybox:latest"}
    start_id = commands.send_to_node(node.id, "start_instance", start)  # a live rental's start

    for _ in range(200):
        agent = agents(node).connect(hello=False)
        agent.hello(containers=_containers(500))
        agent.close()
    wait_until(_fleet_queue_drained, 400, interval=1, what="200 hellos recorded")

    length = get_redis().xlen(commands.stream_key(str(node.id)))
    assert 900 <= length <= STREAM_MAX  # full of the newest stops, never over the cap
    assert _stream_bytes(node.id) < 1_000_000  # was about 20 MB before the cap
    ids = {entry.command_id for entry in commands.pending_entries(str(node.id), count=2000)}
    assert start_id in ids  # the platform's own command was never trimmed


def test_an_expired_start_is_dropped_by_the_pump_and_never_sent(agents, node):
    start = {"rental_id": str(uuid.uuid4()), "image": "localhost/busybox:latest"}
    commands.send_to_node(node.id, "start_instance", start, expires_at=time.time() - 1)
    stop = {"rental_id": str(uuid.uuid4()), "container_id": "c-1"}
    stop_id = commands.send_to_node(node.id, "stop_instance", stop)

    agent = agents(node).connect()
    frames = agent.frames_within(1.5)
    assert [f["event"] for f in frames if f.get("id") and f["event"] != "self_test"] == [
        "stop_instance"
    ]
    assert len(pending_besides_self_test(node.id)) == 1
    assert [e.command_id for e in pending_besides_self_test(node.id)] == [stop_id]


def test_a_newer_stop_supersedes_the_queued_start_and_stop_of_the_rental(node):
    rental = str(uuid.uuid4())
    commands.send_to_node(
        node.id, "start_instance", {"rental_id": rental, "image": "localhost/busybox:latest"}
    )
    commands.send_to_node(node.id, "stop_instance", {"rental_id": rental, "container_id": None})
    latest = commands.send_to_node(
        node.id, "stop_instance", {"rental_id": rental, "container_id": None}
    )
    assert [e.command_id for e in pending_besides_self_test(node.id)] == [latest]


def test_a_connection_whose_key_was_rotated_is_closed_even_when_the_revoke_message_is_missed(
    agents, node
):
    agent = agents(node).connect()
    with session_scope() as session:  # rotated without telling the socket servers
        issue_key(session, node_id=node.id)
    code, _reason = agent.wait_closed(timeout=20)  # the sweep runs every 10 s
    assert code == 4001


def test_a_late_instance_started_with_another_container_is_stopped(
    agents, node, other_user, rentals_worker
):
    rental = make_rental(
        node.id, other_user.id, status=RentalStatus.COMPLETED, container_id="c-first"
    )
    agent = agents(node).connect()
    agent.send("instance_started", {"rental_id": str(rental), "container_id": "c-second"})
    stop = agent.recv_event("stop_instance", timeout=15)
    assert (stop["data"]["rental_id"], stop["data"]["container_id"]) == (str(rental), "c-second")


def test_an_instance_started_for_a_rental_the_platform_does_not_know_is_stopped(
    agents, node, rentals_worker
):
    unknown = str(uuid.uuid4())
    agent = agents(node).connect()
    agent.send("instance_started", {"rental_id": unknown, "container_id": "c-rogue"})
    stop = agent.recv_event("stop_instance", timeout=15)
    assert (stop["data"]["rental_id"], stop["data"]["container_id"]) == (unknown, "c-rogue")


def test_undrain_offers_the_node_again_and_the_agents_new_welcome_says_so(client, agents, node):
    agent = agents(node).connect()
    drained = client.post(f"/api/v1/nodes/{node.id}/drain", headers=node.owner.headers)
    assert drained.status_code == 202
    agent.recv_event("drain_node", timeout=5)  # not acked: still queued

    undrained = client.post(f"/api/v1/nodes/{node.id}/undrain", headers=node.owner.headers)
    assert undrained.status_code == 202, undrained.json
    assert undrained.json["draining"] is False
    assert node_row(node.id).draining is False
    code, _ = agent.wait_closed()
    assert code == 4002  # asked to reconnect
    again = agents(node).connect()
    assert again.welcome is not None and again.welcome["data"]["draining"] is False
    assert [f for f in again.frames_within(1.0) if f["event"] == "drain_node"] == []
    assert len(pending_besides_self_test(node.id)) == 0


def test_undrain_of_another_hosts_node_is_not_found(client, node, other_user):
    response = client.post(f"/api/v1/nodes/{node.id}/undrain", headers=other_user.headers)
    assert response.status_code == 404
