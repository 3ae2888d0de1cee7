"""scripts/proc.sh (make start/down) starts a crashed process again.

A process killed while its parent does not reap it stays a zombie, and `kill -0` still succeeds on
a zombie. Here the test process makes itself a child subreaper, so the processes proc.sh starts
become its children and stay unreaped after a SIGKILL: the situation a container's init that never
reaps, or a busy supervisor, leaves behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROC = str(ROOT / "scripts" / "proc.sh")
PR_SET_CHILD_SUBREAPER = 36

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def proc(tmp_path):
    env = {
        **os.environ,
        "PROC_RUN_DIR": str(tmp_path / "run"),
        "PROC_LOG_DIR": str(tmp_path / "log"),
    }
    names: set[str] = set()

    def _run(*args: str) -> str:
        if args[0] == "start":
            names.add(args[1])
        result = subprocess.run([PROC, *args], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    _run.run_dir = tmp_path / "run"  # type: ignore[attr-defined]
    _run.pid = lambda name: int((tmp_path / "run" / f"{name}.pid").read_text())  # type: ignore[attr-defined]
    yield _run
    if names:
        subprocess.run([PROC, "stop", *names], env=env, capture_output=True, timeout=60)


@pytest.fixture
def subreaper():
    """Adopt the orphans proc.sh starts, and reap them at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)


def test_a_killed_process_that_nobody_reaped_is_started_again(proc, subreaper):
    proc("start", "sleeper", "sleep", "300")
    first = proc.pid("sleeper")

    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: _state(first) == "Z")
    os.kill(first, 0)  # what the old liveness check asked: a zombie still answers

    assert "sleeper stopped" in proc("status", "sleeper")
    assert "sleeper started" in proc("start", "sleeper", "sleep", "300")
    second = proc.pid("sleeper")
    assert second != first
    assert _alive(second)
    assert "sleeper running" in proc("status", "sleeper")


def test_a_pid_file_naming_someone_elses_process_does_not_count(proc):
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        proc.run_dir.mkdir(parents=True, exist_ok=True)
        (proc.run_dir / "api.pid").write_text(f"{stranger.pid}\n")
        (proc.run_dir / "api.start").write_text("1\n")  # not when the stranger started

        assert "api stopped" in proc("status", "api")
        assert "api started" in proc("start", "api", "sleep", "300")
        assert proc.pid("api") != stranger.pid
        assert stranger.poll() is None, "proc.sh must leave a process that is not its own alone"
    finally:
        stranger.kill()
        stranger.wait()


def test_what_a_crashed_process_left_behind_is_ended_before_it_starts_again(proc, subreaper):
    # A leader with a child in its session, like a gunicorn master and its worker.
    proc("start", "web", "bash", "-c", "sleep 301 & wait")
    leader = proc.pid("web")
    _wait_for(lambda: any(_is_child_sleep(pid, leader) for pid in _pids()))
    (child,) = [pid for pid in _pids() if _is_child_sleep(pid, leader)]

    os.kill(leader, signal.SIGKILL)
    _wait_for(lambda: not _alive(leader))
    assert _alive(child)

    assert "web started" in proc("start", "web", "sleep", "300")
    _wait_for(lambda: not _alive(child))


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _is_child_sleep(pid: int, leader: int) -> bool:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[3]) == leader and "(sleep)" in stat and _alive(pid)
    return False
