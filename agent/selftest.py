"""The platform's `self_test` command: run the benchmark container and report what it measured.

The benchmark (agent/bench.py) runs in `localhost/dc-bench:latest` with the limits the platform
asked for, no network, and every GPU of the node. The agent adds what only the host can see: the
engine's own record of the container (its id and the limits it applied) and whether the tunnel
server answers. Nothing is estimated: a part that could not be measured is absent (null) and
named in `failures`.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from agent.bench import RESULT_MARK
from agent.containers import Engine
from agent.failures import EngineUnavailable
from agent.runspec import LABEL_NODE, _gpu_arguments
from agent.values import ram_limit_bytes

log = logging.getLogger("agent.selftest")

BENCH_SOURCE = (Path(__file__).parent / "bench.py").read_text()
LABEL_SELF_TEST = "dc.self_test"
RUN_TIMEOUT = 300.0  # seconds the benchmark container may run
TUNNEL_TIMEOUT = 5.0
FAILURE_LIMIT = 500


def tunnel_reachable(tunnel: dict[str, Any] | None) -> bool | None:
    """Whether the frps server from the welcome accepts a TCP connection; None when no tunnel
    is configured."""
    if not tunnel:
        return None
    try:
        with socket.create_connection(
            (tunnel["server_addr"], int(tunnel["server_port"])), timeout=TUNNEL_TIMEOUT
        ):
            return True
    except OSError:
        return False


class SelfTest:
    def __init__(self, engine: Engine):
        self.engine = engine

    def run(self, node_id: str, command: dict[str, Any], tunnel: dict[str, Any] | None) -> dict:
        """The `self_test_result` data for one `self_test` command (never raises for the engine)."""
        failures: list[str] = []
        measured: dict[str, Any] = {"container_ok": False}
        proof: dict[str, Any] = {}
        try:
            found = self._bench(node_id, command, failures)
        except EngineUnavailable as exc:
            failures.append(f"engine_unavailable: {exc}")
            found = None
        if found is not None:
            result, engine_view = found
            measured.update(result.get("measured") or {})
            failures += [str(f)[:FAILURE_LIMIT] for f in result.get("failures") or []]
            proof = {**(result.get("proof") or {}), **engine_view}
            measured["container_ok"] = engine_view.pop("limits_applied", False)
            proof.pop("limits_applied", None)
        gpus = measured.pop("gpus", None)
        measured.update(_gpu_summary(gpus))
        reachable = tunnel_reachable(tunnel)
        if reachable is not None:
            measured["tunnel_ok"] = reachable
            if not reachable:
                failures.append("tunnel_unreachable: the tunnel server did not accept a connection")
        return {
            "run_id": command["run_id"],
            "nonce": command["nonce"],
            "measured": measured,
            "failures": failures[:32],
            "proof": proof,
        }

    # ------------------------------------------------------------ the container
    def _bench(
        self, node_id: str, command: dict[str, Any], failures: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        limits = command.get("limits") or {}
        work = command.get("work") or {}
        gpus = self.engine.hardware.gpus()
        gpu = _gpu_arguments(gpus, self.engine.policy())
        kwargs: dict[str, Any] = {
            "command": ["python3", "-c", BENCH_SOURCE],
            "detach": True,
            "network_mode": "none",
            "labels": {LABEL_NODE: node_id, LABEL_SELF_TEST: command["run_id"]},
            "environment": {
                **gpu.pop("environment"),
                "DC_BENCH_NONCE": command["nonce"],
                "DC_BENCH_DISK_MB": str(work.get("disk_mb", 256)),
                "DC_BENCH_RAM_MB": str(work.get("ram_mb", 1024)),
                "DC_BENCH_MATRIX": str(work.get("matrix", 512)),
                "DC_BENCH_GPUS": str(len(gpus)),
            },
            **gpu,
        }
        wanted: dict[str, int] = {}
        if limits.get("ram_limit"):
            wanted["Memory"] = ram_limit_bytes(limits["ram_limit"])
            kwargs["mem_limit"] = kwargs["memswap_limit"] = wanted["Memory"]
        if limits.get("cpu_cores"):
            wanted["NanoCpus"] = int(float(limits["cpu_cores"]) * 1e9)
            kwargs["nano_cpus"] = wanted["NanoCpus"]
        container = self._start(command["image"], kwargs, failures)
        if container is None and wanted:
            # The engine refused the limits: still measure the machine, without them.
            for key in ("mem_limit", "memswap_limit", "nano_cpus"):
                kwargs.pop(key, None)
            container = self._start(command["image"], kwargs, failures)
            wanted = {}
        if container is None:
            return None
        try:
            return self._finish(container, wanted, failures)
        finally:
            try:
                container.remove(force=True)
            except (docker.errors.DockerException, OSError) as exc:
                log.warning("self-test container %s not removed: %s", container.id[:12], exc)

    def _start(self, image: str, kwargs: dict[str, Any], failures: list[str]) -> Any:
        try:
            return self.engine.run(image, kwargs)
        except docker.errors.ImageNotFound:
            failures.append(f"image_not_found: {image} is not on this node (make images)")
        except docker.errors.APIError as exc:
            limits = {k: kwargs[k] for k in ("mem_limit", "nano_cpus") if k in kwargs}
            failures.append(
                f"container_refused: the engine did not start the benchmark with {limits}: "
                f"{str(exc.explanation or exc)[:300]}"
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        return None

    def _finish(
        self, container: Any, wanted: dict[str, int], failures: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        began = time.monotonic()
        try:
            status = container.wait(timeout=RUN_TIMEOUT)
        except Exception:  # the engine's timeout is a requests exception
            failures.append(f"timeout: the benchmark ran longer than {RUN_TIMEOUT:.0f} s")
            return None
        container.reload()
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        line = next(
            (ln for ln in reversed(output.splitlines()) if ln.startswith(RESULT_MARK)), None
        )
        if status.get("StatusCode") != 0 or line is None:
            failures.append(
                f"benchmark_failed: exit code {status.get('StatusCode')}: {output[-300:].strip()}"
            )
            return None
        try:
            result = json.loads(line[len(RESULT_MARK) :])
        except ValueError:
            failures.append("benchmark_failed: unreadable result")
            return None
        host_config = container.attrs.get("HostConfig") or {}
        applied = all(int(host_config.get(key) or 0) == value for key, value in wanted.items())
        if wanted and result.get("proof", {}).get("memory_max") not in (None, wanted.get("Memory")):
            applied = False  # the engine says one thing, the container's cgroup another
        if not wanted:
            failures.append("container_limits: the benchmark could not run with the limits")
        elif not applied:
            failures.append(f"container_limits: asked {wanted}, the engine applied other limits")
        state = container.attrs.get("State") or {}
        engine_view = {
            "container_id": container.id,
            "image_id": container.attrs.get("Image"),
            "engine_memory": host_config.get("Memory"),
            "engine_nano_cpus": host_config.get("NanoCpus"),
            "started_at": state.get("StartedAt"),
            "finished_at": state.get("FinishedAt"),
            "seconds": round(time.monotonic() - began, 2),
            "limits_applied": bool(wanted) and applied,
        }
        return result, engine_view


def _gpu_summary(gpus: Any) -> dict[str, Any]:
    """The contract's GPU figures from the per-GPU list: the slowest GPU's TFLOPS and bandwidth,
    the smallest VRAM (a rental may get any of them); null without a measurement."""
    if not gpus:
        return {"gpus": None, "tflops": None, "gpu_vram_gb": None, "h2d_gbps": None}
    return {
        "gpus": gpus,
        "tflops": min(g["tflops"] for g in gpus),
        "gpu_vram_gb": min(g["vram_gb"] for g in gpus),
        "h2d_gbps": round(min(g["h2d_gbps"] for g in gpus), 2),
    }
