"""The self-test end to end: the real agent runs the benchmark container (localhost/dc-bench) on
the real engine, the real platform (gunicorn + gevent, a Dramatiq worker) checks the proof and
sets `verified` from the figures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.agent.conftest import node_containers
from tests.procs import api_server, free_port, running, wait_http, wait_until, worker_process

pytestmark = pytest.mark.slow

# Small work, so that a run takes seconds on a shared test machine.
ENV = {"SELF_TEST_DISK_MB": "16", "SELF_TEST_RAM_MB": "64"}


@pytest.fixture
def tunnel_server() -> Iterator[int]:
    """A TCP listener standing in for frps: the self-test only checks that it accepts."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def platform_url(bench_image, tunnel_server) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**ENV, "FRPS_ADDR": "127.0.0.1", "FRPS_PORT": str(tunnel_server)}
    with running(
        api_server(port, env, name="selftest-api"), worker_process(env, name="selftest-worker")
    ) as (api, _):
        wait_http(f"{url}/api/v1/health", proc=api)
        yield url


@pytest.fixture
def this_machine(tmp_path) -> dict[str, Any]:
    """What the agent detects here, as the specs a truthful host declares."""
    from agent.hardware import Hardware

    return Hardware(tmp_path).node_specs()


@pytest.fixture
def cleanup(engine) -> Iterator[list[str]]:
    node_ids: list[str] = []
    yield node_ids
    for node_id in node_ids:
        for container in node_containers(engine, node_id):
            container.remove(force=True)


def _runs(url: str, node_id: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v1/nodes/{node_id}/self-tests", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _settled(url: str, node_id: Any, headers: dict[str, str], count: int = 1) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        runs = _runs(url, node_id, headers)
        if len(runs) >= count and runs[0]["status"] in ("passed", "failed"):
            return runs[0]
        return None

    return wait_until(done, 180, 0.5, what="the self-test settled")


def test_a_new_node_runs_the_benchmark_container_and_is_verified_by_its_figures(
    platform_url, register_node, user, start_agent, this_machine, engine, cleanup, client
):
    node = register_node(user, specs=this_machine)
    cleanup.append(str(node.id))
    agent = start_agent(platform_url, key=node.api_key)

    run = _settled(platform_url, node.id, user.headers)

    assert run["status"] == "passed", run["failures"]
    assert run["trigger"] == "first_connect"
    measured = run["measured"]
    assert measured["container_ok"] is True
    assert measured["cpu_cores"] == this_machine["cpu_cores"]
    assert measured["ram_gb"] >= 0.9 * this_machine["ram_gb"]
    assert measured["disk_gb"] >= 0.9 * this_machine["disk_gb"]
    assert measured["disk_write_mbps"] > 0 and measured["cpu_gflops"] > 0
    # No GPU here: the GPU part is absent, not estimated.
    assert measured["tflops"] is None and measured["gpus"] is None
    assert measured["tunnel_ok"] is True  # the welcome's tunnel server accepted a connection
    agent.wait_log(f"self-test {run['id']}: running the benchmark container")
    assert node_containers(engine, str(node.id)) == []  # the benchmark container is removed

    shown = client.get(f"/api/v1/nodes/{node.id}", headers=user.headers).json
    assert shown["verified"] is True and shown["self_test_failed"] is False
    assert shown["measured_specs"]["disk_write_mbps"] == measured["disk_write_mbps"]
    offers = client.get("/api/v1/offers", headers=user.headers).json["items"]
    offer = next(o for o in offers if o["node_id"] == str(node.id))
    assert offer["verified"] is True
    assert offer["measured"]["cpu_gflops"] == measured["cpu_gflops"]

    # The owner asks again: a second run, listed first.
    response = requests.post(
        f"{platform_url}/api/v1/nodes/{node.id}/self-test", headers=user.headers, timeout=10
    )
    assert response.status_code == 202, response.text
    again = _settled(platform_url, node.id, user.headers, count=2)
    assert again["id"] == response.json()["id"] and again["trigger"] == "owner"
    assert again["status"] == "passed", again["failures"]
    assert [r["id"] for r in _runs(platform_url, node.id, user.headers)] == [again["id"], run["id"]]


def test_a_node_declaring_twice_its_real_ram_is_not_verified_nor_offered_unless_its_owner_asks(
    platform_url, register_node, user, start_agent, this_machine, cleanup, client
):
    node = register_node(user, specs={**this_machine, "ram_gb": 2 * this_machine["ram_gb"]})
    cleanup.append(str(node.id))
    start_agent(platform_url, key=node.api_key)

    run = _settled(platform_url, node.id, user.headers)

    assert run["status"] == "failed"
    assert any(f.startswith("ram_gb_below_declared") for f in run["failures"]), run["failures"]
    assert run["measured"]["ram_gb"] < this_machine["ram_gb"] * 1.1
    shown = client.get(f"/api/v1/nodes/{node.id}", headers=user.headers).json
    assert shown["verified"] is False and shown["self_test_failed"] is True
    offered = {
        o["node_id"] for o in client.get("/api/v1/offers", headers=user.headers).json["items"]
    }
    assert str(node.id) not in offered

    patched = client.patch(
        f"/api/v1/nodes/{node.id}", json={"list_unverified": True}, headers=user.headers
    )
    assert patched.status_code == 200 and patched.json["list_unverified"] is True
    offers = client.get("/api/v1/offers", headers=user.headers).json["items"]
    offer = next(o for o in offers if o["node_id"] == str(node.id))
    assert offer["verified"] is False
    assert offer["measured"]["ram_gb"] == run["measured"]["ram_gb"]
