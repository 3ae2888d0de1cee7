"""Two renters on one multi-GPU node, end to end: real API (gunicorn + gevent), worker, scheduler,
a real agent process and the real container engine.

The machine has no GPU: the agent runs with DC_AGENT_FAKE_GPUS=4 (a named fake at the NVML
boundary) and the fake_gpu_cdi fixture gives Podman a CDI spec for nvidia.com/gpu=0..N whose
only edit is DC_FAKE_GPU_<i>=<uuid> in the container's environment, so what the engine attached is
visible in `docker inspect`. On a GPU machine the same path attaches the real devices
(docs/hosts.md).
"""

from __future__ import annotations

import os

import docker
import pytest
import requests

from app.rentals.models import RentalGpu
from tests.e2e.test_rental_lifecycle import IMAGE, rent, rental_containers
from tests.procs import (
    agent_process,
    api_server,
    free_port,
    running,
    scheduler_process,
    wait_http,
    wait_until,
    worker_process,
)

# What this machine can serve, declared as a 4-GPU node: 2 cores and 2 GB of RAM.
FOUR_FAKE_GPUS = {
    "specs": {
        "gpu_model": "Fake GPU",
        "gpu_count": 4,
        "gpu_vram_gb": 16,
        "tflops": 1,
        "cpu_cores": 2,
        "ram_gb": 2,
        "disk_gb": 1,
    },
    "pricing": {"hourly_rate": "2.0000"},
}


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    client.images.get(IMAGE)
    return client


def env_of(container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"] or [])


def assigned(rental_id: str) -> dict[int, str]:
    from sqlalchemy import select

    from app.db import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(RentalGpu.gpu_index, RentalGpu.gpu_uuid).where(
                RentalGpu.rental_id == rental_id, RentalGpu.released_at.is_(None)
            )
        ).all()
    return {index: gpu_uuid for index, gpu_uuid in rows}


def test_two_rentals_share_a_node_each_with_its_gpus_cores_and_memory(
    register_node, host, renter, make_user, engine, fake_gpu_cdi, tmp_path
):
    other = make_user("user_second_renter", balance="100.0000")
    node = register_node(host, **FOUR_FAKE_GPUS)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = f"{url}/api/v1"
    rentals: dict[str, str] = {}
    with running(
        api_server(port, name="gpu-e2e-api"),
        worker_process(name="gpu-e2e-worker"),
        scheduler_process(),
    ) as (server, _worker, _scheduler):
        wait_http(f"{api}/health", proc=server)
        agent = agent_process(
            url, node.api_key, tmp_path / "agent", name="gpu-e2e-agent", fake_gpus=4
        )
        with running(agent) as (agent,):

            def get(path: str, who) -> dict:
                response = requests.get(f"{api}{path}", headers=who.headers, timeout=10)
                assert response.status_code == 200, response.text
                return response.json()

            wait_until(
                lambda: get(f"/nodes/{node.id}", host)["status"] == "online",
                30,
                what=f"the node online; agent log:\n{agent.tail()}",
            )
            detected = get(f"/nodes/{node.id}", host)["detected_specs"]
            assert [g["index"] for g in detected["gpus"]] == [0, 1, 2, 3]

            for who, name, count in ((renter, "one", 1), (other, "two", 2)):
                rentals[name] = rent(api, who, node.id, gpu_count=count)["id"]
            for name, who in (("one", renter), ("two", other)):
                wait_until(
                    lambda r=rentals[name], w=who: (
                        get(f"/rentals/{r}", w)["rental"]["status"] in ("active", "cancelled")
                    ),
                    90,
                    what=f"rental {name} active; agent log:\n{agent.tail()}",
                )
                rental = get(f"/rentals/{rentals[name]}", who)["rental"]
                assert rental["status"] == "active", rental
            assert get(f"/nodes/{node.id}", host)["status"] == "online"  # 1 of 4 GPUs free

            # Each container has exactly its GPUs, and its share of the cores and memory.
            shares = {"one": (1, 512 * 2**20), "two": (1, 1024 * 2**20)}
            seen: set[int] = set()
            for name, (cores, memory) in shares.items():
                gpus = assigned(rentals[name])
                assert len(gpus) == (1 if name == "one" else 2)
                assert not seen & set(gpus), "a GPU was given to both rentals"
                seen |= set(gpus)
                (container,) = rental_containers(engine, rentals[name])
                host_config = container.attrs["HostConfig"]
                assert host_config["NanoCpus"] == cores * 10**9, name
                assert host_config["Memory"] == memory, name
                env = env_of(container)
                assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(gpus[i] for i in sorted(gpus))
                attached = {
                    int(key.removeprefix("DC_FAKE_GPU_")): value
                    for key, value in env.items()
                    if key.startswith("DC_FAKE_GPU_")
                }
                assert attached == gpus, name  # the engine attached its GPUs and no other

            # Stopping one frees exactly its GPU; the other keeps running; the offer shows it.
            freed = assigned(rentals["one"])
            response = requests.post(
                f"{api}/rentals/{rentals['one']}/stop", headers=renter.headers, timeout=10
            )
            assert response.status_code == 202
            wait_until(
                lambda: (
                    get(f"/rentals/{rentals['one']}", renter)["rental"]["status"] == "completed"
                ),
                60,
                what=f"rental one completed; agent log:\n{agent.tail()}",
            )
            assert rental_containers(engine, rentals["one"]) == []
            assert assigned(rentals["one"]) == {}
            assert set(assigned(rentals["two"])).isdisjoint(freed)
            (still,) = rental_containers(engine, rentals["two"])
            assert still.status == "running"
            offers = get("/offers", renter)["items"]
            (offer,) = [o for o in offers if o["node_id"] == str(node.id)]
            assert (offer["gpu_free"], offer["price_per_gpu"]) == (2, "0.5000")

            response = requests.post(
                f"{api}/rentals/{rentals['two']}/stop", headers=other.headers, timeout=10
            )
            wait_until(
                lambda: rental_containers(engine, rentals["two"]) == [],
                60,
                what="rental two's container removed",
            )
