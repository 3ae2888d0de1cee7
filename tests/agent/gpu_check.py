"""Show what the agent detects on this machine: run it on a host with an NVIDIA GPU.

    python tests/agent/gpu_check.py

Prints the `specs` the agent sends in `hello` and the `metrics` of a few heartbeats, through the
agent's own detection code, each checked against the protocol schemas the platform uses. It
exits non-zero when a schema refuses them, or (with --expect-gpu) when no GPU was found.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.hardware import Hardware
from agent.protocol import DetectedSpecsSchema, MetricsSchema
from agent.runspec import assigned_gpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-gpu", action="store_true", help="fail when no GPU is found")
    parser.add_argument("--samples", type=int, default=3, help="heartbeats to sample (1 s apart)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    hardware = Hardware("/")
    started = time.perf_counter()
    specs = hardware.detect_specs()
    detect_ms = (time.perf_counter() - started) * 1000
    print("specs (hello):", json.dumps(specs, indent=2))
    print(f"detection took {detect_ms:.1f} ms")
    problems = DetectedSpecsSchema().validate(specs)

    gpus = hardware.gpus()
    if gpus:
        indices = [str(g.index) for g in gpus]
        chosen = assigned_gpus({"gpu_indices": indices}, gpus)
        print("device request for all GPUs:", [gpu.uuid for gpu in chosen])
    for sample in range(max(1, args.samples)):
        if sample:
            time.sleep(1)
        started = time.perf_counter()
        metrics = hardware.metrics()
        took = (time.perf_counter() - started) * 1000
        print(f"metrics (heartbeat {sample + 1}, {took:.1f} ms):", json.dumps(metrics))
        problems = problems or MetricsSchema().validate(metrics)

    if problems:
        print("REFUSED by the protocol schema:", problems)
        return 1
    if args.expect_gpu and not gpus:
        print("no GPU found")
        return 1
    print(f"OK: {len(gpus)} GPU(s): {', '.join(g.name for g in gpus) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
