"""Real processes for end-to-end tests: API/socket server, workers, scheduler, agent."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], object],
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            assert self.popen is not None
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.popen is not None
        self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def api_server(port: int, env: dict[str, str] | None = None, name: str = "api") -> Proc:
    """The platform's HTTP and socket server as production runs it (gunicorn, gevent)."""
    return Proc(
        name,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ],
        {"API_PORT": str(port), **(env or {})},
    )


def worker_process(
    env: dict[str, str] | None = None, name: str = "worker", threads: int = 4
) -> Proc:
    return Proc(
        name,
        [
            sys.executable,
            "-m",
            "dramatiq",
            "workers",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ],
        env,
    )


def scheduler_process(env: dict[str, str] | None = None) -> Proc:
    return Proc("scheduler", [sys.executable, "-m", "workers.scheduler"], env)


def agent_process(
    url: str,
    api_key: str,
    data_dir: Path,
    *,
    name: str = "agent",
    fake_gpus: int = 0,
    heartbeat_interval: float = 1.0,
    env: dict[str, str] | None = None,
) -> Proc:
    """The real agent (`python -m agent`) for a node, without frpc.

    `fake_gpus=N` makes it report N fake GPUs (DC_AGENT_FAKE_GPUS); their containers start only
    with the fake GPUs' CDI spec in place: request the `fake_gpu_cdi` fixture (tests/fixtures.py).
    """
    from agent.config import FAKE_GPUS_ENV
    from tests.fake_gpus import CDI_SPEC

    if fake_gpus and not CDI_SPEC.exists():
        raise RuntimeError(f"fake GPUs need {CDI_SPEC}: request the fake_gpu_cdi fixture")
    return Proc(
        name,
        agent_argv(url, api_key, data_dir, heartbeat_interval),
        {"DC_LOG_LEVEL": "INFO", FAKE_GPUS_ENV: str(fake_gpus), **(env or {})},
    )


def agent_argv(
    url: str, api_key: str, data_dir: Path, heartbeat_interval: float, *flags: str
) -> list[str]:
    """The command line of a test agent (no frpc unless `flags` name one)."""
    return [
        sys.executable,
        "-m",
        "agent",
        "--platform-url",
        url,
        "--api-key",
        api_key,
        "--data-dir",
        str(data_dir),
        "--heartbeat-interval",
        str(heartbeat_interval),
        "--frpc-bin",
        "",
        *flags,
    ]


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> None:
    def ok() -> bool:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        return requests.get(url, timeout=2).status_code < 500

    try:
        wait_until(ok, timeout, 0.2, what=url)
    except TimeoutError:
        raise TimeoutError(
            f"{url} did not answer" + (f"; log:\n{proc.tail()}" if proc else "")
        ) from None
