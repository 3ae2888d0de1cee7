"""A scripted agent that answers the self-test with figures it did not measure is not verified.

The agent here is tests/fleet/agent_sim.py (no container, no benchmark); the platform is the real
socket server and a fleet worker. The honest path, with the real agent and the benchmark
container, is in tests/agent/test_self_test.py.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from app.db import session_scope
from app.fleet.models import NodeSelfTest
from tests.fleet.helpers import node_row
from tests.procs import wait_until

# What the node declares (tests/factories: 2x RTX 4090) and a bit more, as a cheat would claim.
FIGURES = {
    "cpu_cores": 32,
    "cpu_gflops": 900.0,
    "ram_gb": 128.0,
    "disk_gb": 2000.0,
    "disk_write_mbps": 3000.0,
    "container_ok": True,
    "tflops": 90.0,
    "gpu_vram_gb": 24.0,
    "h2d_gbps": 25.0,
    "gpus": [{"index": i, "tflops": 90.0, "vram_gb": 24.0, "h2d_gbps": 25.0} for i in range(2)],
}


def _run(run_id: str) -> NodeSelfTest:
    with session_scope() as session:
        run = session.get(NodeSelfTest, run_id)
        assert run is not None
        session.expunge(run)
        return run


def _settled(run_id: str) -> NodeSelfTest:
    return wait_until(
        lambda: _run(run_id).status in ("passed", "failed") and _run(run_id),
        15,
        what="the self-test settled",
    )


def _answer(agent: Any, command: dict[str, Any], **data: Any) -> None:
    agent.ack(command["id"])
    agent.send(
        "self_test_result",
        {
            "run_id": command["data"]["run_id"],
            "nonce": command["data"]["nonce"],
            "measured": FIGURES,
            "failures": [],
            **data,
        },
    )


def test_a_scripted_agent_reporting_figures_without_the_proof_is_not_verified(
    agents, node, fleet_worker
):
    agent = agents(node).connect()
    command = agent.recv_event("self_test")
    assert command["data"]["limits"] == {"cpu_cores": 16.0, "ram_limit": "65536m"}

    _answer(agent, command)

    run = _settled(command["data"]["run_id"])
    assert run.status == "failed"
    assert run.failures[0].startswith("proof_missing")
    row = node_row(node.id)
    assert row.verified is False and row.self_test_failed is True
    assert row.measured_specs is None  # unproven figures are never shown on offers


def test_a_scripted_agent_with_a_made_up_proof_is_not_verified(agents, node, fleet_worker):
    agent = agents(node).connect()
    command = agent.recv_event("self_test")
    container_id = secrets.token_hex(32)
    work = command["data"]["work"]
    made_up = {
        "nonce": command["data"]["nonce"],
        "hostname": container_id[:12],
        "container_id": container_id,
        "disk_mb": work["disk_mb"],
        # A digest of something other than the nonce's file, and plausible matrix entries.
        "disk_sha256": hashlib.sha256(b"not the file").hexdigest(),
        "matrix": work["matrix"],
        "cpu_samples": [128.0] * 8,
        "engine_memory": 65536 * 2**20,
        "memory_max": 65536 * 2**20,
    }

    _answer(agent, command, proof=made_up)

    run = wait_until(
        lambda: (
            _run(command["data"]["run_id"]).status != "running" and _run(command["data"]["run_id"])
        ),
        60,  # the worker recomputes the nonce's file digest
        what="the self-test settled",
    )
    assert run.status == "failed"
    assert "proof_invalid: the disk file's digest is not the nonce's" in run.failures
    assert "proof_invalid: the matrix product's samples are wrong" in run.failures
    # FIGURES claims two GPUs, and the proof has no GPU work at all.
    assert "proof_invalid: the GPUs' matrix product samples are missing or wrong" in run.failures
    assert node_row(node.id).verified is False


def test_a_result_with_another_nonce_or_for_another_node_changes_nothing(
    agents, node, register_node, user, fleet_worker
):
    from app.fleet.actors import on_self_test_result

    agent = agents(node).connect()
    command = agent.recv_event("self_test")
    run_id = command["data"]["run_id"]
    other = register_node(user, name="other")
    for node_id, nonce in (
        (str(node.id), secrets.token_hex(32)),  # replayed or made up: not this run's nonce
        (str(other.id), command["data"]["nonce"]),  # another node's agent
    ):
        on_self_test_result.fn(
            node_id=node_id, run_id=run_id, nonce=nonce, measured=FIGURES, failures=[], proof={}
        )
    assert _run(run_id).status == "running"
    assert node_row(node.id).self_test_failed is False
