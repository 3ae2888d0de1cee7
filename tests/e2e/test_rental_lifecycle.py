"""The main job end to end: real API (gunicorn + gevent), worker, scheduler, a real agent process
and the real container engine, PostgreSQL, Redis and InfluxDB.

rent -> container running (seen through the engine) -> active with connection info -> stop ->
container gone, rental completed, ports free, node online again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests import procs
from tests.billing.factory import ledger
from tests.procs import (
    Proc,
    api_server,
    free_port,
    running,
    scheduler_process,
    wait_http,
    wait_until,
    worker_process,
)
from tests.rentals.helpers import all_allocations, live_allocations, load_rental

IMAGE = "localhost/busybox:latest"
# A node this machine can really serve: no GPU, one core, 1 GB of RAM.
SMALL_NODE = {
    "specs": {
        "gpu_model": "none",
        "gpu_count": 0,
        "gpu_vram_gb": 0,
        "tflops": 0,
        "cpu_cores": 1,
        "ram_gb": 1,
        "disk_gb": 1,
    },
    "pricing": {"hourly_rate": "0.6000"},
}
# Exits on SIGTERM, so the graceful stop does not wait out the grace period.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    client.images.get(IMAGE)
    return client


def rental_containers(engine: docker.DockerClient, rental_id: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"dc.rental_id={rental_id}"})


def _assert_billed_per_second(rental_id: str, done: dict, settings) -> None:
    """The rental paid exactly its active seconds at its price; the host got the rest of the fee.

    Billing is per second of active time (it was per started minute, so this expectation was
    "one minute at least"): the clock ran from the start until the stop was asked for.
    """
    from decimal import Decimal

    from app.billing.rules import amount_for_seconds, fee_for

    row = load_rental(rental_id)
    seconds = int((row.stop_requested_at - row.start_time).total_seconds())
    total = amount_for_seconds(Decimal(done["cost_per_hour"]), seconds)
    fee = fee_for(total, settings.platform_fee_percent)
    assert Decimal(done["cost_so_far"]) == total == row.billed_amount
    assert ledger(row.id) == {"usage": total, "earning": total - fee, "fee": fee}


def rent(api: str, who, node_id, **body: Any) -> dict[str, Any]:
    """POST /rentals of IMAGE running COMMAND on `node_id` (with `body`'s fields): the rental."""
    response = requests.post(
        f"{api}/rentals",
        headers=who.headers,
        timeout=10,
        json={"node_id": str(node_id), "image": IMAGE, "command": COMMAND, **body},
    )
    assert response.status_code == 202, response.text
    return response.json()["rental"]


def agent_process(url: str, api_key: str, data_dir: Path, **options: Any) -> Proc:
    """The real agent for these tests (options: tests.procs.agent_process's, e.g. fake_gpus=4)."""
    return procs.agent_process(url, api_key, data_dir, name="rental-e2e-agent", **options)


def test_a_renter_rents_a_node_reaches_its_container_and_stops_it(
    register_node, host, renter, engine, tmp_path, settings
):
    node = register_node(host, **SMALL_NODE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = f"{url}/api/v1"
    rental_id = None
    try:
        with running(
            api_server(port, name="rental-e2e-api"),
            worker_process(name="rental-e2e-worker"),
            scheduler_process(),
        ) as (server, worker, _scheduler):
            wait_http(f"{api}/health", proc=server)
            with running(agent_process(url, node.api_key, tmp_path / "agent")) as (agent,):

                def node_status() -> str:
                    return requests.get(
                        f"{api}/nodes/{node.id}", headers=host.headers, timeout=5
                    ).json()["status"]

                wait_until(
                    lambda: node_status() == "online",
                    30,
                    what=f"the node online; agent log:\n{agent.tail()}",
                )

                rental = rent(api, renter, node.id, env={"GREETING": "hello"}, ports=[8080])
                rental_id = rental["id"]
                assert rental["status"] == "pending"

                def running_container():
                    found = rental_containers(engine, rental_id)
                    return found if found and found[0].status == "running" else None

                (container,) = wait_until(
                    running_container,
                    30,
                    what=f"the container running; worker log:\n{worker.tail()}\n"
                    f"agent log:\n{agent.tail()}",
                )

                def shown() -> dict:
                    return requests.get(
                        f"{api}/rentals/{rental_id}", headers=renter.headers, timeout=5
                    ).json()["rental"]

                active = wait_until(
                    lambda: shown() if shown()["status"] == "active" else None,
                    20,
                    what="the rental active",
                )
                public_port = active["connection_info"]["ports"]["8080"]
                low, high = settings.proxy_port_range
                assert low <= public_port <= high
                assert active["connection_info"]["host"] == settings.public_proxy_host
                assert "ssh" not in active["connection_info"]  # port 22 not exposed
                assert load_rental(rental_id).container_id == container.id
                assert active["start_time"] is not None
                assert active["cost_so_far"] is not None

                assert container.labels["dc.node_id"] == str(node.id)
                assert json.loads(container.labels["dc.ports"]) == {"8080": public_port}
                assert "GREETING=hello" in container.attrs["Config"]["Env"]
                assert [(a.container_port, a.port) for a in live_allocations(rental_id)] == [
                    (8080, public_port)
                ]
                assert node_status() == "busy"

                stop = requests.post(
                    f"{api}/rentals/{rental_id}/stop", headers=renter.headers, timeout=10
                )
                assert stop.status_code == 202, stop.text

                wait_until(
                    lambda: rental_containers(engine, rental_id) == [],
                    30,
                    what=f"the container gone; agent log:\n{agent.tail()}",
                )
                done = wait_until(
                    lambda: shown() if shown()["status"] == "completed" else None,
                    20,
                    what=f"the rental completed; worker log:\n{worker.tail()}",
                )
                assert done["end_time"] is not None
                assert done["failure_reason"] is None
                _assert_billed_per_second(rental_id, done, settings)
                assert live_allocations(rental_id) == []
                assert len(all_allocations(rental_id)) == 1
                wait_until(lambda: node_status() == "online", 15, what="the node online again")
    finally:
        if rental_id:
            for leftover in rental_containers(engine, rental_id):
                leftover.remove(force=True)
