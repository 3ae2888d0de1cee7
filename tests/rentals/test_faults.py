"""Faults: a stop the agent never confirms, a node that goes away with a rental on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlalchemy import update

from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus
from app.fleet import actors as fleet_actors
from app.proxy.models import PortAllocation
from app.rentals import actors
from tests.fleet.agent_sim import SPECS, SimAgent
from tests.procs import api_server, free_port, running, wait_http, wait_until, worker_process
from tests.rentals.helpers import (
    backdate_node_status,
    live_allocations,
    load_node,
    load_rental,
    rental_body,
    set_node_status,
)

STOP_TIMEOUT = 2


@pytest.fixture(scope="module")
def platform(_database) -> Iterator[str]:
    """API and socket server plus a worker, with a short stop timeout."""
    env = {"RENTAL_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT)}
    port = free_port()
    server = api_server(port, env, name="faults-api")
    with running(server, worker_process(env, name="faults-worker", threads=4)):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=server)
        yield f"http://127.0.0.1:{port}"


def _hello(agent: SimAgent, containers: list[dict[str, str]]) -> None:
    agent.hello(containers=containers, specs=SPECS)


def test_a_stop_the_agent_never_confirms_is_sent_again_then_ends_the_rental_with_ports_quarantined(
    platform, register_node, host, renter
):
    node = register_node(host)
    agent = SimAgent(platform, node.api_key, node.id).connect()
    wait_until(lambda: load_node(node.id).status == NodeStatus.ONLINE, 15, what="node online")

    rented = requests.post(
        f"{platform}/api/v1/rentals", json=rental_body(node.id), headers=renter.headers, timeout=10
    )
    assert rented.status_code == 202, rented.text
    rental_id = rented.json()["rental"]["id"]
    start = agent.recv_event("start_instance", timeout=15)
    assert start["data"]["expires_at"]  # a start carries its deadline
    agent.ack(start["id"])
    agent.send("instance_started", {"rental_id": rental_id, "container_id": "c-stuck"})
    wait_until(lambda: load_rental(rental_id).status == RentalStatus.ACTIVE, 15, what="active")

    stopped = requests.post(
        f"{platform}/api/v1/rentals/{rental_id}/stop", headers=renter.headers, timeout=10
    )
    assert stopped.status_code == 202
    first = agent.recv_event("stop_instance", timeout=10)
    agent.ack(first["id"])  # taken, and never confirmed
    again = agent.recv_event("stop_instance", timeout=10)  # re-sent after the stop timeout
    assert again["id"] != first["id"] and again["data"] == first["data"]
    agent.ack(again["id"])

    ended = wait_until(
        lambda: (r := load_rental(rental_id)).status == RentalStatus.COMPLETED and r,
        4 * STOP_TIMEOUT + 15,
        what="the rental ended",
    )
    assert ended.failure_reason == f"the node did not confirm the stop within {2 * STOP_TIMEOUT} s"
    assert ended.end_time is not None
    held = live_allocations(rental_id)
    assert len(held) == 2 and all(a.quarantined_until for a in held)  # out of the pool
    assert load_node(node.id).needs_reconcile is True
    code, _ = agent.wait_closed(timeout=10)
    assert code == 4002  # asked to reconnect and report its containers

    back = SimAgent(platform, node.api_key, node.id).connect(hello=False)
    _hello(back, containers=[])  # the container is gone
    wait_until(lambda: live_allocations(rental_id) == [], 15, what="quarantine lifted")
    assert load_node(node.id).needs_reconcile is False
    back.close()


@pytest.fixture
def active_on_offline_node(client, renter, online_node, settings):
    """An active rental whose node has been offline past the grace period, ended for it."""
    node = online_node()
    response = client.post("/api/v1/rentals", json=rental_body(node.id), headers=renter.headers)
    rental_id = response.json["rental"]["id"]
    actors.provision_rental.fn(rental_id)
    actors.on_instance_started.fn(str(node.id), rental_id, "c-away")
    set_node_status(node.id, NodeStatus.OFFLINE)
    backdate_node_status(node.id, settings.rental_offline_grace_seconds + 1)
    actors.end_rental_on_offline_node.fn(rental_id)
    assert load_rental(rental_id).status == RentalStatus.COMPLETED
    assert len(live_allocations(rental_id)) == 2
    assert load_node(node.id).needs_reconcile is True
    return rental_id, node


def _hello_of(node, containers) -> None:
    fleet_actors.record_hello.fn(str(node.id), "0.1.0", SPECS, containers, utcnow().timestamp())


def test_ports_of_a_rental_ended_offline_stay_quarantined_while_its_container_is_reported(
    active_on_offline_node,
):
    rental_id, node = active_on_offline_node
    running_still = [{"rental_id": rental_id, "container_id": "c-away", "state": "running"}]
    _hello_of(node, running_still)
    assert len(live_allocations(rental_id)) == 2
    assert load_node(node.id).needs_reconcile is True

    actors.on_instance_stopped.fn(str(node.id), rental_id, "c-away", 0)  # the stop went through
    assert live_allocations(rental_id) == []
    assert load_node(node.id).needs_reconcile is False


def test_ports_of_a_rental_ended_offline_return_when_the_agent_reports_no_container(
    active_on_offline_node,
):
    rental_id, node = active_on_offline_node
    _hello_of(node, [])
    assert live_allocations(rental_id) == []
    assert load_node(node.id).needs_reconcile is False


def test_a_quarantine_ends_after_its_safety_period_even_if_the_agent_never_returns(
    active_on_offline_node,
):
    rental_id, node = active_on_offline_node
    actors.end_expired_port_quarantines.fn()
    assert len(live_allocations(rental_id)) == 2
    with session_scope() as session:
        session.execute(
            update(PortAllocation)
            .where(PortAllocation.rental_id == uuid.UUID(rental_id))
            .values(quarantined_until=utcnow() - timedelta(seconds=1))
        )
    actors.end_expired_port_quarantines.fn()
    assert live_allocations(rental_id) == []
    assert load_node(node.id).needs_reconcile is False
