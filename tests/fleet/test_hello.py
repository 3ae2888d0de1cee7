"""The agent's hello: detected specs recorded, a self-test asked for, stale containers stopped.

`verified` itself comes from the self-test (tests/fleet/test_self_test.py)."""

from __future__ import annotations

import uuid

from app.enums import NodeStatus, RentalStatus
from app.fleet.liveness import specs_cover
from tests.fleet.agent_sim import SPECS
from tests.fleet.helpers import history, make_rental, node_row, set_node
from tests.procs import wait_until


def test_hello_records_detected_specs_asks_for_a_self_test_and_brings_the_node_online(
    agents, node, fleet_worker
):
    assert node_row(node.id).status == NodeStatus.OFFLINE
    agent = agents(node).connect()

    row = wait_until(
        lambda: node_row(node.id).detected_specs and node_row(node.id),
        10,
        what="the hello recorded",
    )
    assert row.detected_specs["gpu_count"] == 2
    assert row.detected_specs["agent_version"] == "0.1.0-sim"
    assert row.detected_specs["gpus"][1]["uuid"] == "GPU-b"
    assert row.verified is False  # until a self-test passes
    assert row.status == NodeStatus.ONLINE
    assert row.last_seen_at is not None
    command = agent.recv_event("self_test")
    assert command["data"]["image"] == "localhost/dc-bench:latest"
    assert len(command["data"]["nonce"]) == 64
    assert history(node.id) == [(NodeStatus.ONLINE, "agent connected")]


def test_hello_with_less_hardware_than_declared_takes_verified_away(agents, node, fleet_worker):
    set_node(node.id, verified=True)
    agents(node).connect(specs={**SPECS, "gpu_count": 1, "gpus": SPECS["gpus"][:1]})
    row = wait_until(
        lambda: node_row(node.id).detected_specs and node_row(node.id),
        10,
        what="the hello recorded",
    )
    assert row.verified is False
    assert row.status == NodeStatus.ONLINE


def test_specs_cover_allows_the_usual_shortfall_of_reported_sizes_and_nothing_more():
    declared = {"gpu_count": 2, "gpu_vram_gb": 24, "cpu_cores": 16, "ram_gb": 64, "disk_gb": 1000}
    reported = {
        "gpu_count": 2,
        "gpu_vram_gb": 23.99,
        "cpu_cores": 16,
        "ram_gb": 62.8,
        "disk_gb": 931.5,
    }
    assert specs_cover(declared, reported)
    assert specs_cover(declared, {**reported, "gpu_count": 4, "cpu_cores": 32})
    assert not specs_cover(declared, {**reported, "cpu_cores": 15})
    assert not specs_cover(declared, {**reported, "ram_gb": 32})
    assert not specs_cover(declared, {**reported, "gpu_vram_gb": 16})
    assert not specs_cover(declared, {**reported, "disk_gb": 500})
    assert specs_cover(
        {**declared, "gpu_count": 0, "gpu_vram_gb": 0},
        {**reported, "gpu_count": 0, "gpu_vram_gb": 0},
    )


def test_hello_stops_containers_whose_rental_is_not_live_on_the_node(
    agents, node, user, fleet_worker
):
    live_rental = make_rental(node.id, user.id, status=RentalStatus.ACTIVE, container_id="c-live")
    ended = make_rental(node.id, user.id, status=RentalStatus.COMPLETED, container_id="c-old")
    unknown = str(uuid.uuid4())
    containers = [
        {"rental_id": str(live_rental), "container_id": "c-live", "state": "running"},
        {"rental_id": str(ended), "container_id": "c-old", "state": "running"},
        {"rental_id": unknown, "container_id": "c-stray", "state": "exited"},
    ]
    agent = agents(node).connect(containers=containers)

    stops = [agent.recv_event("stop_instance")["data"] for _ in range(2)]
    assert sorted(s["container_id"] for s in stops) == ["c-old", "c-stray"]
    assert [f for f in agent.frames_within(0.8) if f["event"] == "stop_instance"] == []
    # A node with a live rental comes back busy, not free for another renter.
    assert wait_until(lambda: node_row(node.id).status == NodeStatus.BUSY, 10, what="the node busy")
