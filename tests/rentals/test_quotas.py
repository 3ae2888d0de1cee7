"""What one renter may take: live rentals, public ports, a balance spent once, a frame's worth."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.foundation.helpers import app_with
from tests.procs import Proc, api_server, free_port, running, wait_http, wait_until, worker_process
from tests.rentals.helpers import live_allocations, rental_body, rental_count

URL = "/api/v1/rentals"
PORTS_PER_USER = 60


@pytest.fixture(scope="module")
def platform(_database) -> Iterator[str]:
    """The API server as production runs it, with a small per-user port quota, and a worker."""
    env = {"MAX_PORTS_PER_USER": str(PORTS_PER_USER)}
    port = free_port()
    server = api_server(port, env, name="quota-api")
    worker: Proc = worker_process(env, name="quota-worker", threads=2)
    with running(server, worker):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=server)
        yield f"http://127.0.0.1:{port}"


def test_a_renter_at_the_live_rental_quota_gets_a_429_naming_the_limit(make_user, online_node):
    client = app_with(MAX_LIVE_RENTALS_PER_USER="2").test_client()
    renter = make_user("user_quota", balance="100.0000")
    for _ in range(2):
        ok = client.post(URL, json=rental_body(online_node().id), headers=renter.headers)
        assert ok.status_code == 202, ok.json
    refused = client.post(URL, json=rental_body(online_node().id), headers=renter.headers)
    assert refused.status_code == 429
    assert refused.json["code"] == 429 and refused.json["status"] == "Too Many Requests"
    assert "most one account may hold (2)" in refused.json["message"]
    assert rental_count() == 2


def test_a_greedy_renter_cannot_take_the_port_pool_from_everyone_else(
    platform, make_user, online_node, settings
):
    greedy = make_user("user_greedy", balance="1000.0000")
    nodes = [online_node() for _ in range(5)]
    twenty = list(range(1000, 1020))
    answers = [
        requests.post(
            platform + URL,
            json=rental_body(node.id, ports=twenty),
            headers=greedy.headers,
            timeout=10,
        )
        for node in nodes[:4]
    ]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert f"at most {PORTS_PER_USER}" in answers[3].json()["message"]
    wait_until(lambda: len(live_allocations()) == PORTS_PER_USER, 30, what="greedy ports")

    honest = make_user("user_honest", balance="100.0000")
    mine = requests.post(
        platform + URL,
        json=rental_body(nodes[4].id, ports=twenty),
        headers=honest.headers,
        timeout=10,
    )
    assert mine.status_code == 202, mine.text
    rental_id = mine.json()["rental"]["id"]
    wait_until(lambda: len(live_allocations(rental_id)) == 20, 30, what="the honest rental's ports")
    low, high = settings.proxy_port_range
    assert len(live_allocations()) == PORTS_PER_USER + 20 < high - low + 1


def test_concurrent_rents_with_balance_for_one_give_exactly_one_rental(
    platform, make_user, online_node
):
    nodes = [online_node() for _ in range(8)]  # 1.2000 per hour each
    renter = make_user("user_one_hour", balance="1.2000")  # 60 minutes of one rental
    barrier = threading.Barrier(len(nodes))

    def rent(node):
        barrier.wait()
        return requests.post(
            platform + URL, json=rental_body(node.id), headers=renter.headers, timeout=20
        )

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        answers = list(pool.map(rent, nodes))

    codes = Counter(a.status_code for a in answers)
    assert codes == {202: 1, 402: 7}, [(a.status_code, a.text) for a in answers]
    assert rental_count() == 1


def test_a_rental_whose_start_command_would_not_fit_one_frame_is_422(client, renter, online_node):
    node = online_node()
    big = {"A": "x" * 30000, "B": "y" * 30000, "C": "z" * 30000}  # each value is allowed
    refused = client.post(URL, json=rental_body(node.id, env=big), headers=renter.headers)
    assert refused.status_code == 422, refused.json
    assert "65536" in refused.json["message"]
    assert "env" in refused.json["errors"]
    assert rental_count() == 0

    fits = {"A": "x" * 30000, "B": "y" * 30000}
    ok = client.post(URL, json=rental_body(node.id, env=fits), headers=renter.headers)
    assert ok.status_code == 202, ok.json
