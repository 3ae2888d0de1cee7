"""py-spy helpers shared by the benchmarks: sample a server's worker, then summarise where it spent
its time (own time and time with callees, as shares of the samples where it was not idle)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil


def worker_pid(server_pid: int) -> int:
    """The gunicorn worker of a one-worker server (the arbiter itself if it has none yet)."""
    children = psutil.Process(server_pid).children()
    return children[0].pid if children else server_pid


def record(pid: int, out: Path, *, duration: float, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `duration` seconds (raw collapsed stacks, without pausing it)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--duration",
            str(max(1, round(duration))),
            "--pid",
            str(pid),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_functions(path: Path, limit: int = 15) -> str:
    """The functions with the most samples in a py-spy raw profile: own time and total time."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames or frames[-1].startswith("Hub.run "):
            idle += count  # the gevent hub waiting in its event loop
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    busy = max(1, samples - idle)
    out = [f"{samples} samples, {idle} idle; share of the busy ones, own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {n / busy * 100:5.1f}%  {frame}")
    out.append("total time (with callees):")
    for frame, n in sorted(total.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {n / busy * 100:5.1f}%  {frame}")
    return "\n".join(out)
