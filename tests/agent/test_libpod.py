"""On Podman the agent creates containers through libpod: every argument carried over or refused."""

from __future__ import annotations

import pytest
from docker.types import DeviceRequest

from agent.hardware import Hardware
from agent.libpod import FALLBACK_VERSION, api_version, spec_generator
from agent.runspec import NodePolicy, run_arguments
from tests.agent.conftest import IMAGE, start_command


def test_a_rentals_arguments_become_the_same_confinement_in_libpods_terms(tmp_path):
    command = start_command(
        "6f1c3f0e-54a5-4c47-9d59-0f2b8f7a9d11",
        entrypoint=["/bin/sh"],
        command=["-c", "sleep 60"],
        env_vars={"OK": "1"},
        proxy_port_mapping={"8080": 21001},
        resource_limits={"gpu_indices": ["1"], "cpu_cores": 0.5, "ram_limit": "96m"},
    )
    arguments = run_arguments(
        "node",
        command,
        Hardware(tmp_path, fake_gpus=2),
        NodePolicy("127.0.0.1", 4096, podman=True),
    )
    spec = spec_generator(IMAGE, arguments)
    assert spec["devices"] == [{"path": "nvidia.com/gpu=1"}]
    assert spec["env"]["OK"] == "1" and spec["env"]["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-fake")
    assert spec["entrypoint"] == ["/bin/sh"] and spec["command"] == ["-c", "sleep 60"]
    assert spec["cap_drop"] == ["ALL"] and spec["cap_add"] == arguments["cap_add"]
    assert spec["no_new_privileges"] is True
    assert spec["resource_limits"] == {
        "pids": {"limit": 4096},
        "memory": {"limit": 96 * 2**20, "swap": 96 * 2**20},
        "cpu": {"quota": 50_000, "period": 100_000},
    }
    assert spec["portmappings"] == [
        {"container_port": 8080, "host_ip": "127.0.0.1", "host_port": 0, "protocol": "tcp"}
    ]
    assert spec["Networks"] == {"dc-6f1c3f0e-54a5-4c47-9d59-0f2b8f7a9d11": {}}
    assert spec["log_configuration"] == {
        "driver": "json-file",
        "size": 50_000_000,
    }  # as Podman reads 50m
    assert spec["labels"] == arguments["labels"] and spec["name"] == arguments["name"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"privileged": True},  # libpod would ignore a field it does not know: never send one
        {"security_opt": ["seccomp=unconfined"]},
        {"device_requests": [DeviceRequest(device_ids=["GPU-aaaa"], capabilities=[["gpu"]])]},
        {"log_config": {"Type": "json-file", "Config": {"compress": "true"}}},
    ],
)
def test_an_argument_libpod_cannot_carry_is_refused_not_dropped(arguments):
    with pytest.raises(ValueError):
        spec_generator(IMAGE, arguments)


def test_libpod_is_asked_at_the_engines_own_api_version():
    podman = {"Name": "Podman Engine", "Version": "5.4.2", "Details": {"APIVersion": "5.4.2-dev"}}
    assert api_version([{"Name": "Conmon"}, podman]) == "5.4.2"
    assert api_version([{"Name": "Podman Engine", "Details": {}}]) == FALLBACK_VERSION
