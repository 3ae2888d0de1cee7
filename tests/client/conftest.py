"""`dc` against the real platform: gunicorn API, a Dramatiq worker, the scheduler, a real agent
process and the container engine, as a person or a script would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.fixtures import TestUser
from tests.procs import (
    Proc,
    api_server,
    free_port,
    running,
    scheduler_process,
    wait_http,
    wait_until,
    worker_process,
)

IMAGE = "localhost/busybox:latest"
DC = Path(sys.executable).parent / "dc"
# A node this machine can really serve: no GPU, one core, 1 GB of RAM (flags of `dc nodes register`).
SMALL_NODE = [
    "--gpu-model", "none", "--gpu-count", "0", "--vram", "0", "--tflops", "0",
    "--cpu-cores", "1", "--ram", "1", "--disk", "1", "--rate", "0.60", "--country", "DE",
]  # fmt: skip
# Prints a line, then exits on SIGTERM so the graceful stop does not wait out the grace period.
COMMAND = ["sh", "-c", "echo hello from dc; trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture
def api_key_for(platform) -> Callable[[TestUser], str]:
    """The one place that says what `dc` authenticates with: a real `full` user API key
    (`dck_...`) made once per user with the user's session through POST /api-keys."""
    made: dict[str, str] = {}

    def key(user: TestUser) -> str:
        if user.clerk_id not in made:
            response = requests.post(
                f"{platform.url}/api/v1/api-keys",
                headers=user.headers,
                json={"name": "dc", "scope": "full"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            made[user.clerk_id] = response.json()["api_key"]
            assert made[user.clerk_id].startswith("dck_")
        return made[user.clerk_id]

    return key


@dataclass
class Ran:
    argv: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except ValueError as exc:
            raise AssertionError(
                f"{self.argv} printed no JSON: {self.out!r} / {self.err!r}"
            ) from exc

    def ok(self) -> Ran:
        assert self.code == 0, f"{' '.join(self.argv)} exited {self.code}: {self.err}"
        return self


@dataclass
class Platform:
    url: str
    api: Proc
    worker: Proc

    def logs(self) -> str:
        return f"api log:\n{self.api.tail()}\nworker log:\n{self.worker.tail()}"


@pytest.fixture(scope="package")
def platform() -> Iterator[Platform]:
    """The server processes, shared by the tests of this folder (each test makes its own users
    and node; the rows are truncated after each test, the processes stay)."""
    assert DC.exists(), f"{DC} is missing: `make install` installs the client (-e ./client)"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        api_server(port, name="client-e2e-api"),
        worker_process(name="client-e2e-worker"),
        scheduler_process(),
    ) as (server, worker, _scheduler):
        wait_http(f"{url}/api/v1/health", proc=server)
        yield Platform(url=url, api=server, worker=worker)


@pytest.fixture
def dc_env(tmp_path, platform) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DC_")}
    return {
        **env,
        "DC_API_URL": platform.url,
        "XDG_CONFIG_HOME": str(tmp_path / "dc-config"),
        "PATH": f"{DC.parent}:{env.get('PATH', '/usr/bin:/bin')}",
        "COLUMNS": "200",
    }


@pytest.fixture
def dc(dc_env, api_key_for) -> Callable[..., Ran]:
    """dc(*args, as_user=user) runs the installed `dc` as that user."""

    def run(*args: str, as_user: TestUser | None = None, timeout: float = 120) -> Ran:
        env = dict(dc_env)
        if as_user is not None:
            env["DC_API_KEY"] = api_key_for(as_user)
        argv = [str(DC), *args]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        return Ran(argv, done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(scope="package")
def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    client.images.get(IMAGE)
    return client


def agent_process(url: str, api_key: str, data_dir: Path) -> Proc:
    return Proc(
        "client-e2e-agent",
        [
            sys.executable, "-m", "agent", "--platform-url", url, "--api-key", api_key,
            "--data-dir", str(data_dir), "--heartbeat-interval", "1", "--frpc-bin", "",
        ],
        {"DC_LOG_LEVEL": "INFO"},
    )  # fmt: skip


@pytest.fixture
def online_node(dc, platform, make_user, engine, tmp_path) -> Iterator[dict[str, Any]]:
    """A node registered by its host with `dc nodes register`, its real agent connected."""
    host = make_user("user_host", email="host@example.com")
    created = dc("nodes", "register", "--name", "cli-box", *SMALL_NODE, "--json", as_user=host)
    body = created.ok().json()
    node, key = body["node"], body["api_key"]
    assert key.startswith("dcn_")
    with running(agent_process(platform.url, key, tmp_path / "agent")) as (agent,):
        wait_until(
            lambda: (
                dc("nodes", "show", node["id"], "--json", as_user=host).ok().json()["status"]
                == "online"
            ),
            40,
            what=f"the node online; agent log:\n{agent.tail()}",
        )
        yield {"id": node["id"], "host": host, "agent": agent}
    for container in engine.containers.list(
        all=True, filters={"label": f"dc.node_id={node['id']}"}
    ):
        container.remove(force=True)


@pytest.fixture
def renter(make_user) -> TestUser:
    return make_user("user_renter", email="renter@example.com", balance="100.0000")
