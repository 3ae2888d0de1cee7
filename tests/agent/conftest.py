"""Fixtures for the agent: the real container engine, the agent as a process, a platform peer."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.config import FAKE_GPUS_ENV
from tests.agent.stand_in import PlatformStandIn
from tests.procs import ROOT, Proc, agent_argv, wait_until

IMAGE = "localhost/busybox:latest"
TEST_KEY = "dcn_test-agent-key-0123456789"


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    client.images.get(IMAGE)  # scripts/services.sh builds it
    return client


@pytest.fixture
def node_id(engine) -> Iterator[str]:
    """A fresh node id; every container labelled with it is removed afterwards."""
    value = str(uuid.uuid4())
    yield value
    for container in engine.containers.list(all=True, filters={"label": f"dc.node_id={value}"}):
        container.remove(force=True)
    for network in engine.networks.list(filters={"label": f"dc.node_id={value}"}):
        network.remove()


def node_containers(engine: docker.DockerClient, node_id: str) -> list[Any]:
    return engine.containers.list(all=True, filters={"label": f"dc.node_id={node_id}"})


@pytest.fixture
def platform(node_id) -> Iterator[PlatformStandIn]:
    server = PlatformStandIn(api_key=TEST_KEY, node_id=node_id).start()
    yield server
    server.stop()


class AgentProcess(Proc):
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: text in self.log(), timeout, what=f"agent log line {text!r}")


@pytest.fixture
def start_agent(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """start_agent(url, *flags, key=TEST_KEY, env=None, fake_gpus=0) -> AgentProcess running
    `python -m agent`; with fake_gpus=N it reports N fake GPUs and their CDI spec is in place."""
    started: list[AgentProcess] = []

    def _start(
        url: str,
        *flags: str,
        key: str = TEST_KEY,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        fake_gpus: int = 0,
    ) -> AgentProcess:
        if fake_gpus:
            request.getfixturevalue("fake_gpu_cdi")
        data = data_dir or tmp_path / f"agent-data-{len(started)}"
        argv = agent_argv(url, key, data, 0.5, *flags)  # no frpc unless a test passes one
        proc = AgentProcess(
            f"agent-{len(started)}",
            argv,
            {"DC_LOG_LEVEL": "INFO", FAKE_GPUS_ENV: str(fake_gpus), **(env or {})},
        )
        proc.log_path = tmp_path / f"agent-{len(started)}.log"
        started.append(proc)
        return proc.start()  # type: ignore[return-value]

    yield _start
    for proc in started:
        proc.stop()


@pytest.fixture
def agent(platform, start_agent) -> AgentProcess:
    proc = start_agent(platform.url)
    platform.wait_connected()
    platform.wait_for("hello")
    return proc


def start_command(rental_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rental_id": rental_id,
        "image": IMAGE,
        "command": ["sleep", "300"],
        "resource_limits": {"gpu_indices": [], "cpu_cores": 1, "ram_limit": "64m"},
        "env_vars": {},
        "proxy_port_mapping": {},
    }
    data.update(overrides)
    return data


__all__ = ["IMAGE", "ROOT", "TEST_KEY", "node_containers", "start_command"]
