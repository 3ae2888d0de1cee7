"""Hardware detection and metrics on this machine (no GPU, no NVIDIA driver) and GPU selection."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from agent.daemon import backoff_delay
from agent.failures import StartFailed
from agent.hardware import Gpu, Hardware, estimated_tflops
from agent.protocol import DetectedSpecsSchema, MetricsSchema
from agent.runspec import NodePolicy, assigned_gpus, run_arguments
from tests.procs import ROOT


def gpu_device_ids(indices: list[str], gpus: list[Gpu]) -> list[str]:
    return [gpu.uuid for gpu in assigned_gpus({"gpu_indices": indices}, gpus)]


def test_a_machine_without_nvml_is_a_cpu_node_with_one_log_line(caplog, tmp_path):
    hardware = Hardware(tmp_path)
    with caplog.at_level(logging.WARNING, logger="agent.hardware"):
        specs = hardware.detect_specs()
        metrics = hardware.metrics()
        hardware.metrics()
    assert DetectedSpecsSchema().validate(specs) == {}
    assert MetricsSchema().validate(metrics) == {}
    assert specs["gpu_count"] == 0 and specs["gpus"] == [] and specs["gpu_model"] == ""
    assert specs["cpu_cores"] >= 1 and specs["ram_gb"] > 0 and specs["disk_gb"] > 0
    assert metrics["gpu_temp"] == metrics["gpu_utilization"] == metrics["gpu_power_w"] == []
    assert metrics["ram_usage_mb"] > 0 and 0 < metrics["disk_usage_gb"] <= specs["disk_gb"]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "reporting no GPUs" in caplog.records[0].message


GPUS = [Gpu(0, "GPU-aaaa", "NVIDIA H100", 81559), Gpu(1, "GPU-bbbb", "NVIDIA H100", 81559)]


def test_gpus_are_requested_by_uuid_for_the_platforms_indices():
    assert gpu_device_ids(["1"], GPUS) == ["GPU-bbbb"]
    assert gpu_device_ids(["0", "1"], GPUS) == ["GPU-aaaa", "GPU-bbbb"]
    assert gpu_device_ids([], GPUS) == []


def test_a_gpu_index_that_is_not_present_is_named_in_the_reason():
    with pytest.raises(StartFailed, match=r"GPU 2 is not present on this node \(GPUs here: 0, 1\)"):
        gpu_device_ids(["0", "2"], GPUS)
    with pytest.raises(StartFailed, match="GPUs here: none"):
        gpu_device_ids(["0"], [])


def test_gpus_named_by_uuid_win_over_indices_and_an_unknown_uuid_is_refused():
    chosen = assigned_gpus({"gpu_uuids": ["GPU-bbbb"], "gpu_indices": ["0"]}, GPUS)
    assert [gpu.index for gpu in chosen] == [1]
    with pytest.raises(StartFailed, match="GPU GPU-cccc is not present") as caught:
        assigned_gpus({"gpu_uuids": ["GPU-cccc"]}, GPUS)
    assert caught.value.code == "insufficient_resources"


class _TwoGpus(Hardware):
    def gpus(self) -> list[Gpu]:
        return GPUS


def test_a_rental_sees_only_its_gpus_and_renter_env_cannot_choose_others(tmp_path):
    command = {
        "rental_id": "6f1c3f0e-54a5-4c47-9d59-0f2b8f7a9d11",
        "image": "localhost/busybox:latest",
        "resource_limits": {"gpu_indices": ["1"]},
        "env_vars": {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0", "KEEP": "1"},
    }
    docker_args = run_arguments(
        "n", command, _TwoGpus(tmp_path), NodePolicy("127.0.0.1", 4096, podman=False)
    )
    assert docker_args["environment"] == {"KEEP": "1", "NVIDIA_VISIBLE_DEVICES": "GPU-bbbb"}
    (request,) = docker_args["device_requests"]
    assert request["DeviceIDs"] == ["GPU-bbbb"] and request["Capabilities"] == [["gpu"]]
    podman_args = run_arguments(
        "n", command, _TwoGpus(tmp_path), NodePolicy("127.0.0.1", 4096, podman=True)
    )
    (request,) = podman_args["device_requests"]
    assert request["Driver"] == "cdi" and request["DeviceIDs"] == ["nvidia.com/gpu=1"]
    cpu_only = run_arguments(
        "n",
        {**command, "resource_limits": {}},
        _TwoGpus(tmp_path),
        NodePolicy("127.0.0.1", 4096, podman=False),
    )
    assert cpu_only["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "device_requests" not in cpu_only


def test_detect_prints_the_contracts_specs_shape_for_registration():
    out = subprocess.run(
        [sys.executable, "-m", "agent", "detect", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    specs = json.loads(out.stdout)
    assert set(specs) >= {
        "gpu_model",
        "gpu_count",
        "gpu_vram_gb",
        "tflops",
        "cpu_cores",
        "ram_gb",
        "disk_gb",
    }
    assert specs["gpu_count"] == 0 and specs["gpu_model"] == "none" and specs["tflops"] == 0
    assert specs["cpu_cores"] >= 1 and specs["ram_gb"] > 0
    assert estimated_tflops("NVIDIA H100 PCIe") == 51.0 and estimated_tflops("Tesla T4") == 8.1


def test_reconnect_delays_grow_exponentially_with_jitter_up_to_a_cap():
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)):
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered, so agents do not reconnect in step
