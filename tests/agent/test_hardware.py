"""Hardware detection and metrics on this machine (no GPU, no NVIDIA driver) and GPU selection."""

from __future__ import annotations

import logging

import pytest

from agent.containers import StartFailed, gpu_device_ids
from agent.daemon import backoff_delay
from agent.hardware import Gpu, Hardware
from agent.protocol import DetectedSpecsSchema, MetricsSchema


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


def test_reconnect_delays_grow_exponentially_with_jitter_up_to_a_cap():
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)):
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered, so agents do not reconnect in step
