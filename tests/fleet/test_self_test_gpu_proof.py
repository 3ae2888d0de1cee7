"""The platform's check of a self-test's GPU part, on a result recorded on a real H200.

tests/fleet/data/h200_selftest.json is what `python tests/agent/gpu_selftest.py --out ...` wrote on
a machine with one NVIDIA H200 (no container engine there, so the container's identity and limits
are absent from its proof; those are checked with a real engine in tests/agent/test_self_test.py).
Here the platform's own functions judge it: the GPU's sampled entries of the nonce's matrix
product are accepted as they came from the GPU, and any change to them, or a GPU without them, is
refused; the measured figures pass against what an H200 host should declare and fail against the
data-sheet FP32 peak, which a dense FP32 matrix product does not reach.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.fleet.selftest import _figure_failures, _proof_failures

RECORDED = json.loads((Path(__file__).parent / "data" / "h200_selftest.json").read_text())
GPU_PROOF = "proof_invalid: the GPUs' matrix product samples are missing or wrong"
# What an honest H200 host declares: the figures its own self-test reaches.
H200 = {"gpu_count": 1, "gpu_vram_gb": 141, "tflops": 50, "cpu_cores": 16, "ram_gb": 125}


def _problems(measured: dict[str, Any], proof: dict[str, Any]) -> list[str]:
    run = SimpleNamespace(
        nonce=RECORDED["nonce"], work=RECORDED["work"], expected={"cpu_cores": 16, "ram_gb": 125}
    )
    # No engine ran the recorded benchmark: an id its hostname ("vm") cannot match.
    return _proof_failures(run, measured, {"container_id": "0" * 64, **proof})


def test_the_recorded_h200_run_proves_its_cpu_disk_and_gpu_work():
    problems = _problems(RECORDED["measured"], RECORDED["proof"])
    # No engine ran it, so only the container's identity is missing from the proof.
    assert problems == ["proof_invalid: the container's hostname is not its engine id"]
    assert RECORDED["measured"]["gpus"][0]["vram_gb"] > 139


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda p: p["gpu_samples"][0].__setitem__(3, p["gpu_samples"][0][3] * 1.001),
            id="one-entry-off",
        ),
        pytest.param(lambda p: p.pop("gpu_samples"), id="missing"),
        pytest.param(lambda p: p.__setitem__("gpu_samples", []), id="none-for-the-gpu"),
        pytest.param(
            lambda p: p.__setitem__("gpu_samples", p["cpu_samples"]), id="not-a-list-of-lists"
        ),
    ],
)
def test_gpu_figures_without_the_gpus_work_are_refused(tamper):
    proof = copy.deepcopy(RECORDED["proof"])
    tamper(proof)
    assert GPU_PROOF in _problems(RECORDED["measured"], proof)


def test_a_second_gpu_claimed_with_one_gpus_proof_is_refused():
    measured = copy.deepcopy(RECORDED["measured"])
    measured["gpus"].append({**measured["gpus"][0], "index": 1})
    assert GPU_PROOF in _problems(measured, RECORDED["proof"])


def test_the_h200_figures_against_declarations():
    measured = {**RECORDED["measured"], "container_ok": True, "disk_gb": 252.0}
    assert _figure_failures({**H200, "disk_gb": 250}, measured) == []
    # The FP32 data-sheet peak (67 TFLOPS) is more than a dense FP32 product reaches (about 51).
    short = _figure_failures({**H200, "tflops": 67, "disk_gb": 250}, measured)
    assert [p.split(":")[0] for p in short] == ["tflops_below_declared"]
    # Twice the real VRAM is not verified either.
    assert (
        "gpu_vram_gb_below_declared"
        in _figure_failures({**H200, "gpu_vram_gb": 282, "disk_gb": 250}, measured)[0]
    )


@pytest.mark.parametrize(
    ("gpu_count", "gpu_image", "expected"),
    [
        (2, "localhost/dc-bench-gpu:latest", "localhost/dc-bench-gpu:latest"),
        (0, "localhost/dc-bench-gpu:latest", "localhost/dc-bench:latest"),
        (2, "", "localhost/dc-bench:latest"),
    ],
)
def test_a_gpu_node_gets_the_gpu_benchmark_image_when_one_is_set(gpu_count, gpu_image, expected):
    from app.fleet.selftest import _image

    settings = SimpleNamespace(
        self_test_image="localhost/dc-bench:latest", self_test_gpu_image=gpu_image
    )
    assert _image({"gpu_count": gpu_count}, settings) == expected
