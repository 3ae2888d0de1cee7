"""A real worker process killed with SIGKILL in the middle of provisioning a rental."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import new_session, session_scope
from app.enums import NodeStatus, RentalStatus
from app.fleet.commands import pending
from app.proxy.models import PortAllocation
from app.rentals.models import Rental
from tests.procs import wait_until, worker_process
from tests.rentals.helpers import all_allocations, load_node, load_rental, rental_body


def _blocked_on_port_insert() -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO port_allocations%'"
                )
            ).scalar()
        )


def hold_port(port: int, *, renter_id, node_id) -> Session:
    """A session holding `port` in an uncommitted allocation (of a stand-in rental on `node_id`):
    a worker that allocates it waits until the session ends."""
    holder = new_session()
    squatter = Rental(
        renter_id=renter_id,
        node_id=node_id,
        image="busybox",
        cost_per_hour=1,
        status=RentalStatus.PENDING,
    )
    holder.add(squatter)
    holder.flush()
    holder.add(PortAllocation(port=port, container_port=1, node_id=node_id, rental_id=squatter.id))
    holder.flush()
    return holder


def kill_worker_mid_provisioning(port: int, *, renter_id, node_id) -> dict[str, str]:
    """Start a worker that may use only `port`, held meanwhile by an uncommitted transaction
    (for `node_id`), and SIGKILL it once it blocks on that port in the middle of provisioning.
    Returns the worker's environment, for the worker that takes the redelivered message."""
    holder = hold_port(port, renter_id=renter_id, node_id=node_id)
    env = {
        "PROXY_PORT_RANGE": f"{port}-{port}",
        "DC_BROKER_HEARTBEAT_TIMEOUT_MS": "1500",
        "DC_BROKER_MAINTENANCE_CHANCE": "1000000",
    }
    worker = worker_process(env, name="worker-killed").start()
    try:
        wait_until(_blocked_on_port_insert, timeout=30, what="the worker to block mid-provisioning")
        worker.kill()
    finally:
        worker.stop()
        holder.rollback()
        holder.close()
    return env


def test_a_worker_killed_mid_provisioning_leaves_one_allocation_after_redelivery(
    client, renter, online_node, settings
):
    only_port = settings.proxy_port_range[1]  # the workers below may use this one port and no other
    node, bystander = online_node(), online_node()
    response = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ports=[22]), headers=renter.headers
    )
    assert response.status_code == 202
    rental_id = response.json["rental"]["id"]

    # Another transaction holds the only port, uncommitted: the worker's allocation waits on it
    # in the middle of provisioning (node row locked, node marked busy, nothing committed).
    env = kill_worker_mid_provisioning(only_port, renter_id=renter.id, node_id=bystander.id)

    assert load_rental(rental_id).status == RentalStatus.PENDING
    assert all_allocations(rental_id) == []
    assert pending(str(node.id)) == []

    second = worker_process(env, name="worker-redelivery").start()
    try:
        wait_until(
            lambda: pending(str(node.id)), timeout=45, what="start_instance after redelivery"
        )
        starts = [json.loads(frame) for _entry, frame in pending(str(node.id))]
        assert {s["data"]["proxy_port_mapping"]["22"] for s in starts} == {only_port}

        from app.rentals.actors import on_instance_started

        on_instance_started.send(str(node.id), rental_id, "c0ffee")
        wait_until(
            lambda: load_rental(rental_id).status == RentalStatus.ACTIVE,
            timeout=20,
            what="the rental to become active",
        )
    finally:
        second.stop()

    allocations = all_allocations(rental_id)
    assert [(a.container_port, a.port, a.released_at) for a in allocations] == [
        (22, only_port, None)
    ]
    assert load_node(node.id).status == NodeStatus.BUSY
    rental = load_rental(rental_id)
    assert rental.connection_info["ports"] == {"22": only_port}
    assert uuid.UUID(rental_id) == rental.id


def test_a_worker_killed_mid_provisioning_assigns_no_gpu_twice_after_redelivery(
    client, renter, online_node, settings
):
    from tests.rentals.test_per_gpu import EIGHT_GPUS, assert_counts_agree, held_gpus

    only_port = settings.proxy_port_range[1]
    node = online_node(specs=EIGHT_GPUS, pricing={"hourly_rate": "16.0000"})
    bystander = online_node()
    first = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ports=[], gpu_count=2), headers=renter.headers
    ).json["rental"]["id"]
    from app.rentals.actors import provision_rental

    provision_rental.fn(first)  # GPUs 0 and 1
    response = client.post(
        "/api/v1/rentals",
        json=rental_body(node.id, ports=[22], gpu_count=3),
        headers=renter.headers,
    )
    assert response.status_code == 202, response.json
    second = response.json["rental"]["id"]

    # As above: the worker blocks in the middle of provisioning, after it assigned the GPUs.
    env = kill_worker_mid_provisioning(only_port, renter_id=renter.id, node_id=bystander.id)

    assert held_gpus(node.id) == {first: [0, 1]}  # the killed transaction left nothing

    again = worker_process(env, name="worker-redelivery-gpu").start()
    try:
        wait_until(
            lambda: second in held_gpus(node.id), timeout=45, what="the redelivered provisioning"
        )
        wait_until(
            lambda: any(
                json.loads(frame)["data"].get("rental_id") == second
                for _entry, frame in pending(str(node.id))
            ),
            timeout=30,
            what="start_instance after redelivery",
        )
    finally:
        again.stop()
    assert held_gpus(node.id) == {first: [0, 1], second: [2, 3, 4]}
    assert_counts_agree(node.id)
