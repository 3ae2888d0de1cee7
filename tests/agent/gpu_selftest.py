"""Run the self-test benchmark's GPU part on a host with an NVIDIA GPU, and check its proof.

    python tests/agent/gpu_selftest.py --out result.json            # on the GPU host
    python tests/agent/gpu_selftest.py --check result.json \\
        --declare gpu_count=1,gpu_vram_gb=141,tflops=60,ram_gb=64,disk_gb=50,cpu_cores=16

The first form runs agent/bench.py, the very program the agent passes to the benchmark container,
with a fresh nonce and every GPU CUDA sees, under this interpreter (it needs numpy and torch with
CUDA; `python3` on a CUDA image has both). It is meant for a GPU host without a container engine:
with an engine, the agent's own path (`self_test` command, benchmark container with the GPUs given
by device request or CDI) is the one to use. It prints the figures as the agent would report them
(agent.selftest's per-GPU summary), checks the proof with the platform's own functions (the disk
file's digest, the CPU's and every GPU's sampled entries of the nonce's matrix product), and
writes the agent's `self_test_result` data to --out.

The second form, run where the platform's code is installed, applies the platform's figure check
(app/fleet/selftest.py) to that result against declared specs: what `verified` would be.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.bench import RESULT_MARK, disk_digest, expected_samples, samples_match  # noqa: E402


def run(args: argparse.Namespace) -> int:
    nonce = secrets.token_hex(32)
    gpus = int(args.gpus) if args.gpus is not None else _cuda_devices()
    env = {
        **os.environ,
        "DC_BENCH_NONCE": nonce,
        "DC_BENCH_DISK_MB": str(args.disk_mb),
        "DC_BENCH_RAM_MB": str(args.ram_mb),
        "DC_BENCH_MATRIX": "512",
        "DC_BENCH_GPUS": str(gpus),
    }
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "agent" / "bench.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - began
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
    if done.returncode != 0 or line is None:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
        print(f"FAILED: the benchmark exited {done.returncode}")
        return 1
    result = json.loads(line[len(RESULT_MARK) :])
    from agent.selftest import _gpu_summary  # the agent's own summary of the per-GPU list

    measured = dict(result["measured"])
    measured.update(_gpu_summary(measured.pop("gpus", None)))
    proof = result["proof"]
    raw = bytes.fromhex(nonce)
    expected = expected_samples(raw, 512)
    checks = {
        "disk digest is the nonce's": proof["disk_sha256"] == disk_digest(raw, args.disk_mb),
        "CPU samples match": samples_match(proof["cpu_samples"], expected),
    }
    if gpus:
        checks["every GPU's samples match"] = (
            bool(measured["gpus"])
            and len(proof["gpu_samples"]) == len(measured["gpus"])
            and all(samples_match(got, expected) for got in proof["gpu_samples"])
        )
    print(f"benchmark ran {seconds:.1f} s with DC_BENCH_GPUS={gpus}")
    print("measured:", json.dumps(measured, indent=2))
    print("failures:", result["failures"])
    for name, ok in checks.items():
        print(f"proof: {name}: {'yes' if ok else 'NO'}")
    data = {
        "nonce": nonce,
        "work": {"disk_mb": args.disk_mb, "ram_mb": args.ram_mb, "matrix": 512},
        "measured": measured,
        "failures": result["failures"],
        "proof": proof,
        "seconds": round(seconds, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2))
    return 0 if all(checks.values()) and not result["failures"] else 1


def _cuda_devices() -> int:
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check(args: argparse.Namespace) -> int:
    from app.fleet.selftest import _figure_failures

    data: dict[str, Any] = json.loads(Path(args.check).read_text())
    declared = {k: float(v) for k, v in (p.split("=", 1) for p in args.declare.split(",") if p)}
    measured = {**data["measured"], "container_ok": True}  # no engine ran it: limits not shown
    problems = _figure_failures(declared, measured) + list(data["failures"])
    print("declared:", declared)
    print("figure check:", problems or "passes (verified, were the container limits shown)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where to write the result (JSON)")
    parser.add_argument("--gpus", help="GPUs to test (default: all that CUDA sees)")
    parser.add_argument("--disk-mb", type=int, default=256)
    parser.add_argument("--ram-mb", type=int, default=1024)
    parser.add_argument("--check", help="a result file to check against --declare")
    parser.add_argument("--declare", default="", help="declared specs, key=value,...")
    args = parser.parse_args()
    return check(args) if args.check else run(args)


if __name__ == "__main__":
    sys.exit(main())
