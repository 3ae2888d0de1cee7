"""Per-GPU rentals: many renters on one multi-GPU node, through the real API and worker code.

The API counts and reserves GPUs under the node's row lock; the workers assign concrete GPUs
under the same lock, and the partial unique index on rental_gpus keeps one GPU with at most one
live rental whatever happens.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.enums import NodeStatus, RentalStatus
from app.fleet.commands import pending
from app.fleet.models import HostNode
from app.rentals import actors
from app.rentals.models import Rental, RentalGpu
from app.rentals.state import LIVE
from tests.rentals.helpers import (
    backdate_node_status,
    load_node,
    load_rental,
    rental_body,
    set_node_status,
)

EIGHT_GPUS = {
    "gpu_model": "H100",
    "gpu_count": 8,
    "gpu_vram_gb": 80,
    "cpu_cores": 64,
    "ram_gb": 512,
    "disk_gb": 8000,
}


@pytest.fixture
def eight_gpu_node(online_node):
    return online_node(specs=EIGHT_GPUS, pricing={"hourly_rate": "16.0000"})


def held_gpus(node_id) -> dict[str, list[int]]:
    """rental id -> the GPU indices it holds now."""
    with session_scope() as session:
        rows = session.execute(
            select(RentalGpu.rental_id, RentalGpu.gpu_index)
            .where(RentalGpu.node_id == uuid.UUID(str(node_id)), RentalGpu.released_at.is_(None))
            .order_by(RentalGpu.gpu_index)
        ).all()
    out: dict[str, list[int]] = {}
    for rental_id, index in rows:
        out.setdefault(str(rental_id), []).append(index)
    return out


def assert_counts_agree(node_id) -> None:
    """gpus_in_use is exactly what the node's live rentals hold."""
    with session_scope() as session:
        node = session.get(HostNode, uuid.UUID(str(node_id)))
        assert node is not None
        held = session.execute(
            select(func.coalesce(func.sum(func.greatest(Rental.gpu_count, 1)), 0)).where(
                Rental.node_id == node.id, Rental.status.in_(LIVE)
            )
        ).scalar_one()
        assert node.gpus_in_use == held


def start_commands(node_id) -> dict[str, dict]:
    starts = {}
    for _entry, frame in pending(str(node_id)):
        message = json.loads(frame)
        if message["event"] == "start_instance":
            starts[message["data"]["rental_id"]] = message["data"]
    return starts


def active_rentals(client, renter, node, sizes) -> list[str]:
    """Active rentals of `sizes` GPUs on `node`, started in order; their containers are c-1..."""
    ids = []
    for size in sizes:
        response = client.post(
            "/api/v1/rentals",
            json=rental_body(node.id, ports=[], gpu_count=size),
            headers=renter.headers,
        )
        assert response.status_code == 202, response.json
        ids.append(response.json["rental"]["id"])
        actors.provision_rental.fn(ids[-1])
        actors.on_instance_started.fn(str(node.id), ids[-1], f"c-{len(ids)}")
    return ids


def rent_concurrently(app, node_id, renters, sizes):
    barrier = threading.Barrier(len(renters))

    def rent(pair):
        user, size = pair
        client = app.test_client()  # one client per thread, like separate renters
        barrier.wait()
        return client.post(
            "/api/v1/rentals",
            json=rental_body(node_id, ports=[], gpu_count=size),
            headers=user.headers,
        )

    with ThreadPoolExecutor(max_workers=len(renters)) as pool:
        return list(pool.map(rent, zip(renters, sizes, strict=True)))


def provision_concurrently(rental_ids):
    barrier = threading.Barrier(len(rental_ids))

    def provision(rental_id):
        barrier.wait()
        actors.provision_rental.fn(rental_id)

    with ThreadPoolExecutor(max_workers=len(rental_ids)) as pool:
        list(pool.map(provision, rental_ids))


def test_fifty_renters_of_one_gpu_on_an_eight_gpu_node_give_exactly_eight_winners(
    app, client, make_user, eight_gpu_node, renter
):
    node = eight_gpu_node
    renters = [make_user(f"user_gpu_{i}", balance="50.0000") for i in range(50)]
    responses = rent_concurrently(app, node.id, renters, [1] * 50)

    codes = Counter(r.status_code for r in responses)
    assert codes == {202: 8, 409: 42}, codes
    assert all(r.json["message"] for r in responses if r.status_code == 409)
    winners = [r.json["rental"]["id"] for r in responses if r.status_code == 202]
    assert {r.json["rental"]["gpu_count"] for r in responses if r.status_code == 202} == {1}
    assert {r.json["rental"]["cost_per_hour"] for r in responses if r.status_code == 202} == {
        "2.0000"  # 16.00 for the whole node, 8 GPUs
    }
    assert load_node(node.id).gpus_in_use == 8

    provision_concurrently(winners)
    held = held_gpus(node.id)
    assert sorted(held) == sorted(winners)
    indices = [i for gpus in held.values() for i in gpus]
    assert sorted(indices) == list(range(8)), "a GPU was given twice"
    starts = start_commands(node.id)
    for rental_id in winners:
        limits = starts[rental_id]["resource_limits"]
        assert limits["gpu_indices"] == [str(i) for i in held[rental_id]]
        assert (limits["cpu_cores"], limits["ram_limit"]) == (8.0, "65536m")  # 1/8 of 64, 512
    assert load_node(node.id).status == NodeStatus.BUSY
    assert_counts_agree(node.id)

    # Nobody else gets in, the default whole-node request included.
    response = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ports=[]), headers=renter.headers
    )
    assert response.status_code == 409

    # One ends: exactly its GPU is free again, and the node is offered for one GPU.
    freed = winners[0]
    actors.on_instance_failed.fn(str(node.id), freed, "test over")
    assert freed not in held_gpus(node.id)
    assert load_node(node.id).status == NodeStatus.ONLINE
    offers = client.get("/api/v1/offers", headers=renter.headers).json["items"]
    (offer,) = [o for o in offers if o["node_id"] == str(node.id)]
    assert (offer["gpu_free"], offer["price_per_gpu"]) == (1, "2.0000")
    response = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ports=[], gpu_count=1), headers=renter.headers
    )
    assert response.status_code == 202, response.json
    actors.provision_rental.fn(response.json["rental"]["id"])
    assert held_gpus(node.id)[response.json["rental"]["id"]] == held[freed]
    assert_counts_agree(node.id)


def test_mixed_sizes_never_overcommit_the_node(app, make_user, eight_gpu_node):
    node = eight_gpu_node
    rng = random.Random(15)
    sizes = [rng.choice((1, 2, 4)) for _ in range(30)]
    renters = [make_user(f"user_mixed_{i}", balance="500.0000") for i in range(30)]
    responses = rent_concurrently(app, node.id, renters, sizes)

    won = [
        (s, r.json["rental"]["id"])
        for s, r in zip(sizes, responses, strict=True)
        if r.status_code == 202
    ]
    lost = [s for s, r in zip(sizes, responses, strict=True) if r.status_code == 409]
    assert len(won) + len(lost) == 30
    taken = sum(s for s, _ in won)
    assert taken <= 8
    # Free GPUs only went down while the requests ran: each refused one asked for more than
    # what was left at the end.
    assert all(size > 8 - taken for size in lost)

    provision_concurrently([rental_id for _, rental_id in won])
    held = held_gpus(node.id)
    for size, rental_id in won:
        assert len(held[rental_id]) == size
    indices = [i for gpus in held.values() for i in gpus]
    assert len(indices) == len(set(indices)) == taken
    assert_counts_agree(node.id)


def test_redelivered_provisioning_assigns_nothing_twice(client, renter, eight_gpu_node):
    node = eight_gpu_node
    ids = []
    for size in (3, 2):
        response = client.post(
            "/api/v1/rentals",
            json=rental_body(node.id, ports=[], gpu_count=size),
            headers=renter.headers,
        )
        assert response.status_code == 202, response.json
        ids.append(response.json["rental"]["id"])
    for _ in range(3):  # each message delivered three times, interleaved
        for rental_id in ids:
            actors.provision_rental.fn(rental_id)
    assert held_gpus(node.id) == {ids[0]: [0, 1, 2], ids[1]: [3, 4]}
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(RentalGpu)).scalar_one() == 5
    assert load_node(node.id).status == NodeStatus.ONLINE  # 3 GPUs still free
    assert_counts_agree(node.id)


def test_gpu_count_is_checked_and_priced_by_share(client, renter, eight_gpu_node, online_node):
    node = eight_gpu_node

    def rent(**body):
        return client.post(
            "/api/v1/rentals", json=rental_body(node.id, ports=[], **body), headers=renter.headers
        )

    for bad in (9, 0, -1, "2", 65):
        response = rent(gpu_count=bad)
        assert response.status_code == 422, (bad, response.json)
        assert "gpu_count" in json.dumps(response.json)
    response = rent(gpu_count=3, max_hourly_rate="5.9999")
    assert response.status_code == 409 and "6.0000" in response.json["message"]
    response = rent(gpu_count=3)
    assert response.status_code == 202
    rental = response.json["rental"]
    assert (rental["gpu_count"], rental["cost_per_hour"]) == (3, "6.0000")
    # The default is the whole node: refused while any GPU is taken, with what is free.
    response = rent()
    assert response.status_code == 409
    assert "5 of the node's 8 GPUs" in response.json["message"]
    response = rent(gpu_count=6)
    assert response.status_code == 409
    assert load_node(node.id).gpus_in_use == 3
    assert load_rental(rental["id"]).cost_per_hour == Decimal("6.0000")

    cpu = online_node(specs={"gpu_model": "none", "gpu_count": 0, "gpu_vram_gb": 0})
    response = client.post(
        "/api/v1/rentals", json=rental_body(cpu.id, ports=[], gpu_count=1), headers=renter.headers
    )
    assert response.status_code == 422
    response = client.post(
        "/api/v1/rentals", json=rental_body(cpu.id, ports=[]), headers=renter.headers
    )
    assert response.status_code == 202 and response.json["rental"]["gpu_count"] == 0
    response = client.post(
        "/api/v1/rentals", json=rental_body(cpu.id, ports=[]), headers=renter.headers
    )
    assert response.status_code == 409  # a CPU-only node is rented whole


def test_maintenance_waits_and_an_offline_node_ends_every_rental_on_it(
    client, renter, eight_gpu_node, settings
):
    node = eight_gpu_node
    ids = active_rentals(client, renter, node, (1, 2))
    assert load_node(node.id).status == NodeStatus.ONLINE  # 5 GPUs free: still on offer
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
    )
    assert response.status_code == 409  # its rentals must end first

    set_node_status(node.id, NodeStatus.OFFLINE)
    backdate_node_status(node.id, settings.rental_offline_grace_seconds + 1)
    actors.end_rentals_on_offline_nodes.fn()
    for rental_id in ids:
        actors.end_rental_on_offline_node.fn(rental_id)
    assert {load_rental(r).status for r in ids} == {RentalStatus.COMPLETED}
    assert held_gpus(node.id) == {}
    assert load_node(node.id).gpus_in_use == 0


def test_a_reconnecting_agent_keeps_every_rental_of_the_node_and_stops_only_strangers(
    client, renter, eight_gpu_node
):
    from app.fleet.actors import record_hello

    node = eight_gpu_node
    ids = active_rentals(client, renter, node, (1, 2, 1))
    stranger = str(uuid.uuid4())
    set_node_status(node.id, NodeStatus.OFFLINE)
    reported = [
        {"rental_id": rental_id, "container_id": f"c-{n}", "state": "running"}
        for n, rental_id in enumerate(ids, start=1)
    ] + [{"rental_id": stranger, "container_id": "c-x", "state": "running"}]
    record_hello.fn(str(node.id), "test", {"gpu_count": 8}, reported, time.time())
    stops = [
        json.loads(frame)["data"]
        for _entry, frame in pending(str(node.id))
        if json.loads(frame)["event"] == "stop_instance"
    ]
    assert [s["rental_id"] for s in stops] == [stranger]
    assert {load_rental(r).status for r in ids} == {RentalStatus.ACTIVE}
    assert load_node(node.id).status == NodeStatus.ONLINE  # 4 of 8 GPUs held: not busy
    assert_counts_agree(node.id)
