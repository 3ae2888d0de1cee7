"""Races: many renters on one node, many provisionings drawing ports from one pool."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.enums import NodeStatus, RentalStatus
from app.rentals import actors
from tests.rentals.helpers import (
    all_allocations,
    live_allocations,
    load_node,
    load_rental,
    rental_body,
    rental_count,
)


@pytest.fixture
def rent_two_pending(client, make_user, online_node):
    renter = make_user("user_pair", balance="100.0000")
    ids = []
    for _ in range(2):
        body = rental_body(online_node().id, ports=[22, 80, 443, 8080])
        response = client.post("/api/v1/rentals", json=body, headers=renter.headers)
        ids.append(uuid.UUID(response.json["rental"]["id"]))
    return ids


def test_fifty_simultaneous_rentals_of_one_node_give_exactly_one_winner(
    app, make_user, online_node
):
    node = online_node()
    renters = [make_user(f"user_race_{i}", balance="50.0000") for i in range(50)]
    barrier = threading.Barrier(len(renters))

    def rent(user):
        client = app.test_client()  # one client per thread, like 50 separate renters
        barrier.wait()
        return client.post("/api/v1/rentals", json=rental_body(node.id), headers=user.headers)

    with ThreadPoolExecutor(max_workers=len(renters)) as pool:
        responses = list(pool.map(rent, renters))

    codes = Counter(r.status_code for r in responses)
    assert codes == {202: 1, 409: 49}, codes
    assert all(r.is_json and r.json["message"] for r in responses if r.status_code == 409)
    assert rental_count() == 1
    (winner,) = [r.json["rental"]["id"] for r in responses if r.status_code == 202]

    actors.provision_rental.fn(winner)
    assert len(live_allocations()) == 2  # the winner's two ports, nothing for the losers
    actors.on_instance_failed.fn(str(node.id), winner, "test over")
    assert live_allocations() == []
    assert load_node(node.id).status == NodeStatus.ONLINE


def test_a_hundred_rentals_provisioned_at_once_never_share_a_port(
    client, make_user, online_node, settings
):
    # Ten renters with ten rentals each: one account may hold at most MAX_LIVE_RENTALS_PER_USER.
    renters = [make_user(f"user_many_{i}", balance="100000.0000") for i in range(10)]
    container_ports = [22, 80, 443, 8080]
    rental_ids = []
    for i in range(100):
        node = online_node()
        response = client.post(
            "/api/v1/rentals",
            json=rental_body(node.id, ports=container_ports),
            headers=renters[i % 10].headers,
        )
        assert response.status_code == 202, response.json
        rental_ids.append(response.json["rental"]["id"])
    barrier = threading.Barrier(25)

    def provision(rental_id):
        if rental_ids.index(rental_id) < 25:
            barrier.wait()  # the first wave starts together
        actors.provision_rental.fn(rental_id)

    with ThreadPoolExecutor(max_workers=25) as pool:
        list(pool.map(provision, rental_ids))

    failed = [
        (r.status, r.failure_reason)
        for r in map(load_rental, rental_ids)
        if r.status != RentalStatus.PENDING
    ]
    assert failed == []
    allocations = live_allocations()
    ports = [a.port for a in allocations]
    assert len(ports) == 100 * len(container_ports)
    assert len(set(ports)) == len(ports), "a public port was given twice"
    low, high = settings.proxy_port_range
    assert all(low <= p <= high for p in ports)
    for rental_id in rental_ids:
        assert sorted(a.container_port for a in all_allocations(rental_id)) == sorted(
            container_ports
        )


def test_when_the_port_pool_runs_out_the_rental_is_cancelled_and_nothing_leaks(
    client, make_user, online_node, settings
):
    low, high = settings.proxy_port_range
    size = high - low + 1
    per_rental = 20
    count = size // per_rental + 1
    # Several renters: one account may hold at most MAX_PORTS_PER_USER public ports.
    per_renter = settings.max_ports_per_user // per_rental
    renters = [
        make_user(f"user_hungry_{i}", balance="100000.0000") for i in range(-(-count // per_renter))
    ]
    rental_ids = []
    for i in range(count):
        node = online_node()
        response = client.post(
            "/api/v1/rentals",
            json=rental_body(node.id, ports=list(range(1, per_rental + 1))),
            headers=renters[i // per_renter].headers,
        )
        assert response.status_code == 202, response.json
        rental_ids.append(response.json["rental"]["id"])
    for rental_id in rental_ids:
        actors.provision_rental.fn(rental_id)

    assert len(live_allocations()) == size - size % per_rental
    last = rental_ids[-1]
    rental = load_rental(last)
    assert rental.status == RentalStatus.CANCELLED
    assert rental.failure_reason == "no free public port; try again later"
    assert live_allocations(last) == []
    assert load_node(rental.node_id).status == NodeStatus.ONLINE


def test_an_allocation_in_progress_never_holds_up_another(rent_two_pending):
    """Two provisionings in flight at once each get their ports at once, and different ones."""
    from app.db import new_session
    from app.proxy.service import allocate_ports
    from app.rentals.models import Rental

    first, second = new_session(), new_session()
    try:
        mine = allocate_ports(
            first, rental=first.get(Rental, rent_two_pending[0]), port_range=(26000, 26009)
        )
        started = time.monotonic()
        theirs = allocate_ports(
            second, rental=second.get(Rental, rent_two_pending[1]), port_range=(26000, 26009)
        )
        assert time.monotonic() - started < 1.0
        assert len(mine) == len(theirs) == 4
        assert not set(mine.values()) & set(theirs.values())
    finally:
        first.rollback()
        second.rollback()
        first.close()
        second.close()
