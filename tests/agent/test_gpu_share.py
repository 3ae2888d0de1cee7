"""Per-GPU rentals on one node: each container gets exactly its GPUs, cores and memory.

The node has 4 fake GPUs (DC_AGENT_FAKE_GPUS); the real engine attaches them through the fake CDI
spec (tests/fake_gpus.py), whose device nvidia.com/gpu=<i> sets DC_FAKE_GPU_<i>=<uuid> in the
container's first process. So what the container sees is what the engine really attached, not
what the agent asked for.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, NamedTuple

import pytest

from agent.config import MAX_FAKE_GPUS
from agent.containers import Engine
from agent.failures import StartFailed
from agent.hardware import FAKE_GPU_NAME, Hardware, fake_gpu
from agent.protocol import decode_from_agent
from agent.runspec import run_arguments
from tests.agent.conftest import start_command
from tests.fake_gpus import ENV_PREFIX

FAKE_GPUS = 4


class Share(NamedTuple):
    limits: dict[str, Any]  # the command's resource_limits
    gpus: list[int]
    nano_cpus: int
    memory: int


# This machine has 2 cores and a few GiB: the two shares fit side by side.
SHARES = {
    "A": Share({"gpu_indices": ["0"], "cpu_cores": 1.0, "ram_limit": "512m"}, [0], 10**9, 2**29),
    "B": Share(
        {"gpu_indices": ["2", "3"], "cpu_cores": 0.5, "ram_limit": "1024m"},
        [2, 3],
        5 * 10**8,
        2**30,
    ),
}


def _env(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _fake_gpus_seen(env: dict[str, str]) -> dict[int, str]:
    """{index: uuid} of the fake GPUs whose CDI edit reached this environment."""
    return {int(k.removeprefix(ENV_PREFIX)): v for k, v in env.items() if k.startswith(ENV_PREFIX)}


def _cgroup_limits(container: Any) -> tuple[int, int]:
    """(memory bytes, CPU quota per 100 ms period) from the container's own cgroup, v2 or v1."""
    script = (
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    )
    out = container.exec_run(["sh", "-c", script])
    memory, cpu = out.output.decode().split("\n")[:2]
    quota, period = cpu.split()
    assert int(period) == 100_000
    return int(memory), int(quota)


def _first_process_env(container: Any) -> dict[str, str]:
    # CDI edits go into the container's process spec: PID 1 has them, `exec`'d processes do not.
    out = container.exec_run(["cat", "/proc/1/environ"])
    assert out.exit_code == 0, out.output
    return _env(out.output.decode().split("\0"))


@pytest.fixture
def four_gpu_engine(fake_gpu_cdi, node_id, tmp_path) -> Engine:
    """The agent's engine on a node with 4 fake GPUs (containers labelled with node_id)."""
    return Engine(
        os.environ["DOCKER_HOST"],
        publish_ip="127.0.0.1",
        hardware=Hardware(tmp_path, fake_gpus=FAKE_GPUS),
    )


def test_fake_gpus_are_reported_as_a_multi_gpu_node_without_nvml(tmp_path):
    hardware = Hardware(tmp_path, fake_gpus=FAKE_GPUS)
    specs, metrics = hardware.detect_specs(), hardware.metrics()
    assert specs["gpu_count"] == FAKE_GPUS and specs["gpu_model"] == FAKE_GPU_NAME
    assert [g["uuid"] for g in specs["gpus"]] == [fake_gpu(i).uuid for i in range(FAKE_GPUS)]
    assert all(g["uuid"].startswith("GPU-fake-") for g in specs["gpus"])
    assert specs["driver_version"] is None and specs["cuda_version"] is None
    assert len(metrics["gpu_temp"]) == len(metrics["gpu_utilization"]) == FAKE_GPUS
    assert hardware.node_specs()["gpu_count"] == FAKE_GPUS


def test_two_rentals_on_a_four_gpu_node_each_get_exactly_their_gpus_cores_and_memory(
    four_gpu_engine, engine, node_id
):
    policy = four_gpu_engine.policy()
    assert policy.podman, "the fake GPUs reach containers through Podman's CDI"
    started = {}
    for name, share in SHARES.items():
        command = start_command(
            str(uuid.uuid4()), command=["sleep", "60"], resource_limits=share.limits
        )
        # What the agent asks for ...
        arguments = run_arguments(node_id, command, four_gpu_engine.hardware, policy)
        (request,) = arguments["device_requests"]
        assert request["Driver"] == "cdi"
        assert request["DeviceIDs"] == [f"nvidia.com/gpu={i}" for i in share.gpus]
        uuids = ",".join(fake_gpu(i).uuid for i in share.gpus)
        assert arguments["environment"]["NVIDIA_VISIBLE_DEVICES"] == uuids
        assert arguments["nano_cpus"] == share.nano_cpus
        assert arguments["mem_limit"] == share.memory
        # ... and what the engine runs.
        found, created = four_gpu_engine.start(
            node_id, command, registry_auth=None, progress=lambda _: None, starting=lambda _: None
        )
        assert created and found.state == "running", name
        started[name] = found.container_id

    for name, share in SHARES.items():
        container = engine.containers.get(started[name])
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == share.nano_cpus, name
        assert host["Memory"] == host["MemorySwap"] == share.memory, name
        env = _env(container.attrs["Config"]["Env"])
        mine = {i: fake_gpu(i).uuid for i in share.gpus}
        assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(mine.values()), name
        assert _fake_gpus_seen(env) == mine, name  # the engine applied its CDI devices, no other
        assert _fake_gpus_seen(_first_process_env(container)) == mine, name
        assert _cgroup_limits(container) == (share.memory, share.nano_cpus // 10_000), name


def test_a_gpu_the_engine_cannot_attach_fails_the_start_and_leaves_nothing_behind(
    fake_gpu_cdi, engine, node_id, tmp_path
):
    # One fake GPU more than the CDI spec names: the engine cannot resolve the last one.
    missing = MAX_FAKE_GPUS
    hardware = Hardware(tmp_path, fake_gpus=MAX_FAKE_GPUS + 1)
    node = Engine(os.environ["DOCKER_HOST"], publish_ip="127.0.0.1", hardware=hardware)
    rental_id = str(uuid.uuid4())
    command = start_command(rental_id, resource_limits={"gpu_indices": [str(missing)]})
    with pytest.raises(StartFailed) as failed:
        node.start(
            node_id, command, registry_auth=None, progress=lambda _: None, starting=lambda _: None
        )
    assert failed.value.code == "insufficient_resources"
    assert f"nvidia.com/gpu={missing}" in str(failed.value)
    assert engine.containers.list(all=True, filters={"label": f"dc.node_id={node_id}"}) == []
    assert engine.networks.list(names=[f"dc-{rental_id}"]) == []


def test_an_agent_started_with_fake_gpus_reports_them_and_runs_a_rental_on_its_gpu(
    platform, start_agent, engine, node_id
):
    agent = start_agent(platform.url, fake_gpus=FAKE_GPUS)
    platform.wait_connected()
    hello = platform.wait_for("hello")
    assert [g["index"] for g in hello["data"]["specs"]["gpus"]] == list(range(FAKE_GPUS))
    agent.wait_log("FAKE GPUs in use (DC_AGENT_FAKE_GPUS=4)")
    beat = platform.wait_for("heartbeat")
    assert len(beat["data"]["metrics"]["gpu_utilization"]) == FAKE_GPUS
    for frame in platform.frames():
        decode_from_agent(json.dumps(frame))  # the platform's schemas take the fake GPUs

    rental_id = str(uuid.uuid4())
    platform.send(
        "start_instance",
        start_command(
            rental_id,
            resource_limits={"gpu_indices": ["1"], "cpu_cores": 0.5, "ram_limit": "64m"},
        ),
    )
    started = platform.wait_for("instance_started", rental_id=rental_id)
    container = engine.containers.get(started["data"]["container_id"])
    assert _fake_gpus_seen(_first_process_env(container)) == {1: fake_gpu(1).uuid}
