"""The self-test benchmark: runs inside the benchmark container (python3 and numpy, nothing else).

The agent passes this file's source to `python3 -c` in `localhost/dc-bench:latest`; the settings
come in the environment (DC_BENCH_*) and the result leaves as one JSON line on stdout after
RESULT_MARK. The proof functions at the top use the standard library only, so the platform imports
this module to check a run (app/fleet/selftest.py) with the same code that made it.

What the proof shows, and what it does not, is in docs/hosts.md: the figures are bound to the
platform's nonce by work whose result the platform can check (the disk file's digest, sampled
entries of a nonce-seeded matrix product), so an agent that only reports numbers is caught; an
agent rewritten to do the same work elsewhere is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from array import array
from typing import Any

RESULT_MARK = "DC-SELFTEST "
CHUNK = 1 << 20  # the disk file is made of 1 MiB chunks, each derived from the nonce
SAMPLES = 8  # entries of the matrix product the platform recomputes
REL_TOLERANCE = 1e-9


# ---------------------------------------------------------------- proof (standard library only)
def disk_chunk(nonce: bytes, index: int) -> bytes:
    return hashlib.shake_256(nonce + b"disk" + index.to_bytes(4, "big")).digest(CHUNK)


def disk_digest(nonce: bytes, size_mb: int) -> str:
    """SHA-256 of the file the benchmark writes: `size_mb` nonce-derived 1 MiB chunks."""
    digest = hashlib.sha256()
    for index in range(size_mb):
        digest.update(disk_chunk(nonce, index))
    return digest.hexdigest()


def matrix_values(nonce: bytes, name: str, n: int) -> array:
    """An n x n matrix (row-major) of values in [0, 1) derived from the nonce."""
    raw = hashlib.shake_256(nonce + b"matrix" + name.encode()).digest(4 * n * n)
    words = array("I")
    words.frombytes(raw)
    if sys.byteorder != "little":
        words.byteswap()
    return array("d", (w / 4294967296.0 for w in words))


def sample_positions(nonce: bytes, n: int) -> list[tuple[int, int]]:
    """The (row, column) entries of A @ B that the benchmark reports and the platform checks."""
    raw = hashlib.shake_256(nonce + b"positions").digest(8 * SAMPLES)
    out = []
    for k in range(SAMPLES):
        word = int.from_bytes(raw[8 * k : 8 * k + 8], "big")
        out.append(((word >> 32) % n, (word & 0xFFFFFFFF) % n))
    return out


def expected_samples(nonce: bytes, n: int) -> list[float]:
    """The sampled entries of A @ B, computed without numpy (a few dot products)."""
    a = matrix_values(nonce, "A", n)
    b = matrix_values(nonce, "B", n)
    return [
        sum(a[i * n + k] * b[k * n + j] for k in range(n)) for i, j in sample_positions(nonce, n)
    ]


def samples_match(reported: Any, expected: list[float]) -> bool:
    if not isinstance(reported, list) or len(reported) != len(expected):
        return False
    for got, want in zip(reported, expected, strict=True):
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return False
        if abs(got - want) > REL_TOLERANCE * max(1.0, abs(want)):
            return False
    return True


# ---------------------------------------------------------------- measurements (in the container)
def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _cgroup_limits() -> dict[str, Any]:
    """The memory and CPU limits the container sees (cgroup v2, else v1)."""
    memory = _read("/sys/fs/cgroup/memory.max") or _read(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    cpu: float | None = None
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            cpu = int(quota) / int(period)
    else:
        quota_v1 = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        period_v1 = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if quota_v1 and period_v1 and int(quota_v1) > 0:
            cpu = int(quota_v1) / int(period_v1)
    memory_max = int(memory) if memory and memory.isdigit() and int(memory) < 1 << 62 else None
    return {"memory_max": memory_max, "cpu_quota": cpu}


def _meminfo_kb() -> int:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _cpu(np: Any, nonce: bytes, n: int, seconds: float) -> tuple[float, list[float]]:
    a = np.frombuffer(matrix_values(nonce, "A", n), dtype=np.float64).reshape(n, n)
    b = np.frombuffer(matrix_values(nonce, "B", n), dtype=np.float64).reshape(n, n)
    c = a @ b
    runs, began = 0, time.perf_counter()
    while True:
        c = a @ b
        runs += 1
        elapsed = time.perf_counter() - began
        if elapsed >= seconds:
            break
    gflops = 2.0 * n**3 * runs / elapsed / 1e9
    return gflops, [float(c[i, j]) for i, j in sample_positions(nonce, n)]


def _ram(np: Any, touch_mb: int) -> float:
    """Allocate and touch `touch_mb` MiB; the fill rate in GB/s."""
    began = time.perf_counter()
    block = np.ones(touch_mb * CHUNK // 8, dtype=np.float64)
    elapsed = time.perf_counter() - began
    total = float(block[:: 4096 // 8].sum())  # read one word per page: every page is resident
    del block
    assert total > 0
    return touch_mb * CHUNK / max(elapsed, 1e-9) / 1e9


def _disk(nonce: bytes, size_mb: int, path: str) -> tuple[float, str]:
    """Write `size_mb` MiB of nonce-derived data with fsync; the rate in MiB/s and its digest
    read back from the file."""
    chunks = [disk_chunk(nonce, i) for i in range(size_mb)]  # made before the clock starts
    began = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in chunks:
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - began
    del chunks
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    os.unlink(path)
    return size_mb / max(elapsed, 1e-9), digest.hexdigest()


def _gpus(
    gpu_count: int, nonce: bytes, n: int
) -> tuple[list[dict[str, Any]] | None, list[list[float]], list[str]]:
    """Per-GPU matmul TFLOPS (FP32), VRAM and host-to-device bandwidth, where a CUDA library is
    in the image; None (never an estimate) where it is not. With them, each GPU's sampled entries
    of the nonce's matrix product (float64, on that GPU): the proof that the GPU did the work."""
    if gpu_count <= 0:
        return None, [], []
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return (
            None,
            [],
            ["gpu_benchmark_unavailable: the benchmark image has no CUDA library (torch)"],
        )
    if not torch.cuda.is_available():
        return None, [], ["gpu_unavailable: CUDA sees no GPU inside the container"]

    import numpy as np  # type: ignore[import-not-found]

    def proof_matrix(name: str) -> Any:
        values = np.frombuffer(matrix_values(nonce, name, n), dtype=np.float64)
        return torch.from_numpy(values.reshape(n, n).copy())

    proof_a, proof_b = proof_matrix("A"), proof_matrix("B")
    positions = sample_positions(nonce, n)
    out, samples = [], []
    size = int(os.environ.get("DC_BENCH_GPU_MATRIX", "8192"))
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        a = torch.rand(size, size, device=device)
        b = torch.rand(size, size, device=device)
        a @ b  # warm-up: cuBLAS picks its kernel outside the clock
        torch.cuda.synchronize(device)
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < 2.0:
            a @ b
            runs += 1
            torch.cuda.synchronize(device)
        tflops = 2.0 * size**3 * runs / (time.perf_counter() - began) / 1e12
        host = torch.empty(256 * CHUNK, dtype=torch.uint8).pin_memory()
        host.to(device)  # warm-up
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        for _ in range(8):
            host.to(device, non_blocking=True)
        torch.cuda.synchronize(device)
        h2d = 8 * host.numel() / (time.perf_counter() - began) / 1e9
        vram = torch.cuda.get_device_properties(device).total_memory / 2**30
        out.append(
            {"index": index, "tflops": round(tflops, 2), "vram_gb": round(vram, 1), "h2d_gbps": h2d}
        )
        product = (proof_a.to(device) @ proof_b.to(device)).cpu()
        samples.append([float(product[i, j]) for i, j in positions])
        del a, b, host
        torch.cuda.empty_cache()
    return out, samples, []


def main() -> int:
    import numpy as np  # type: ignore[import-not-found]  # only inside the benchmark image

    nonce = bytes.fromhex(os.environ["DC_BENCH_NONCE"])
    disk_mb = int(os.environ.get("DC_BENCH_DISK_MB", "256"))
    ram_mb = int(os.environ.get("DC_BENCH_RAM_MB", "1024"))
    n = int(os.environ.get("DC_BENCH_MATRIX", "512"))
    cpu_seconds = float(os.environ.get("DC_BENCH_CPU_SECONDS", "1"))
    gpu_count = int(os.environ.get("DC_BENCH_GPUS", "0"))
    failures: list[str] = []
    stat = os.statvfs("/")
    measured: dict[str, Any] = {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "ram_gb": round(_meminfo_kb() / 2**20, 1),
        "disk_gb": round(stat.f_blocks * stat.f_frsize / 2**30, 1),
    }
    gflops, samples = _cpu(np, nonce, n, cpu_seconds)
    measured["cpu_gflops"] = round(gflops, 2)
    try:
        measured["ram_fill_gbps"] = round(_ram(np, ram_mb), 2)
    except MemoryError:
        failures.append(f"ram: could not allocate {ram_mb} MiB inside the memory limit")
    # The container's own writable layer, on the disk that rentals use; nobody else is in it.
    rate, digest = _disk(nonce, disk_mb, "/var/tmp/dc-selftest.bin")  # noqa: S108
    measured["disk_write_mbps"] = round(rate, 1)
    gpus, gpu_samples, gpu_failures = _gpus(gpu_count, nonce, n)
    failures += gpu_failures
    measured["gpus"] = gpus
    proof = {
        "nonce": nonce.hex(),
        "hostname": socket.gethostname(),
        "disk_mb": disk_mb,
        "disk_sha256": digest,
        "matrix": n,
        "cpu_samples": samples,
        "gpu_samples": gpu_samples,
        **_cgroup_limits(),
    }
    result = {"measured": measured, "failures": failures, "proof": proof}
    print(RESULT_MARK + json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
