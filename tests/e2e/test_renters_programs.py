"""A renter's program end to end: an API key (`dck_`), the SSH image with the program's own key,
`ssh` into the rental, onstart output in the logs, labels, failure codes, and registry credentials
that never show up anywhere. Real API (gunicorn + gevent), worker, scheduler, a real agent process
and the container engine.

frps cannot run here, so the public port in connection_info is reached the way frps would route
it: to the port the agent published on this host for that rental's container port.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.e2e.test_rental_lifecycle import SMALL_NODE, agent_process, rental_containers
from tests.images.fixtures import ssh_argv
from tests.procs import (
    ARTIFACTS,
    Proc,
    api_server,
    free_port,
    running,
    scheduler_process,
    wait_http,
    wait_until,
    worker_process,
)

pytestmark = pytest.mark.slow

# Verbose logs, so that the test that greps them for the registry password reads everything.
VERBOSE = {"LOG_LEVEL": "DEBUG"}


@dataclass
class Platform:
    url: str
    api: str
    procs: tuple[Proc, ...]

    def logs(self) -> str:
        return "\n".join(f"{p.name} log:\n{p.tail()}" for p in self.procs)


@pytest.fixture(scope="module")
def platform(_database) -> Iterator[Platform]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        api_server(port, VERBOSE, name="programs-e2e-api"),
        worker_process(VERBOSE, name="programs-e2e-worker"),
        scheduler_process(),
    ) as procs:
        wait_http(f"{url}/api/v1/health", proc=procs[0])
        yield Platform(url=url, api=f"{url}/api/v1", procs=procs)


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    return docker.DockerClient(base_url=os.environ["DOCKER_HOST"])


@pytest.fixture
def node_with_agent(register_node, host, platform, engine, tmp_path) -> Iterator[Any]:
    """A node of this machine's size with its real agent connected (online)."""
    node = register_node(host, **SMALL_NODE)
    agent = agent_process(platform.url, node.api_key, tmp_path / "agent")
    agent.env["DC_LOG_LEVEL"] = "DEBUG"
    agent.name = "programs-e2e-agent"
    agent.log_path = ARTIFACTS / "programs-e2e-agent.log"
    with running(agent):
        wait_until(
            lambda: (
                requests.get(
                    f"{platform.api}/nodes/{node.id}", headers=host.headers, timeout=5
                ).json()["status"]
                == "online"
            ),
            40,
            what=f"the node online; agent log:\n{agent.tail()}",
        )
        node.agent = agent
        yield node
    for container in engine.containers.list(all=True, filters={"label": f"dc.node_id={node.id}"}):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


class Program:
    """What a renter's script does: every call with `Authorization: Bearer dck_...`."""

    def __init__(self, api: str, key: str):
        self.api = api
        self.headers = {"Authorization": f"Bearer {key}"}
        self.responses: list[str] = []  # every body, for the test that greps them

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = requests.request(method, self.api + path, headers=headers, timeout=30, **kwargs)
        self.responses.append(response.text)
        return response

    def rental(self, rental_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/rentals/{rental_id}")
        assert response.status_code == 200, response.text
        return response.json()["rental"]

    def wait_status(self, rental_id: str, statuses: set[str], timeout: float, what: str) -> dict:
        return wait_until(
            lambda: r if (r := self.rental(rental_id))["status"] in statuses else None,
            timeout,
            interval=0.3,
            what=what,
        )


def api_key(platform: Platform, user) -> str:
    """A real `full` user API key, made with the user's session."""
    response = requests.post(
        f"{platform.api}/api-keys",
        headers=user.headers,
        json={"name": "program", "scope": "full"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    key = response.json()["api_key"]
    assert key.startswith("dck_")
    return key


def published_port(engine: docker.DockerClient, rental_id: str, public_port: int) -> int:
    """Where frps would send `public_port`: the host port the agent published for it."""
    for container in engine.containers.list(filters={"label": f"dc.rental_id={rental_id}"}):
        mapping = json.loads(container.labels.get("dc.ports") or "{}")
        for container_port, public in mapping.items():
            if public == public_port:
                bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(
                    f"{container_port}/tcp"
                )
                assert bindings, container.attrs["NetworkSettings"]
                return int(bindings[0]["HostPort"])
    raise AssertionError(f"no rental container publishes public port {public_port}")


def ssh_until_it_answers(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_an_api_key_program_rents_the_ssh_image_with_its_key_and_runs_a_command_over_ssh(
    platform, node_with_agent, renter, other_user, ssh_image, ssh_keypair, engine
):
    program = Program(platform.api, api_key(platform, renter))
    created = program.call(
        "POST",
        "/rentals",
        json={
            "node_id": str(node_with_agent.id),
            "image": ssh_image,
            "ports": [22],
            "ssh_keys": [ssh_keypair.public_key],
            "onstart": "echo onstart says $((6*7))",
            "labels": {"team": "ml", "run": "e2e-1"},
        },
    )
    assert created.status_code == 202, created.text
    rental = created.json()["rental"]
    rental_id = rental["id"]
    assert (rental["status"], rental["phase"], rental["labels"]) == (
        "pending",
        "queued",
        {"team": "ml", "run": "e2e-1"},
    )
    assert rental["ssh_keys"] == [ssh_keypair.public_key]

    active = program.wait_status(
        rental_id, {"active", "cancelled"}, 60, f"the rental active\n{platform.logs()}"
    )
    assert active["status"] == "active", active
    assert active["phase"] == "running" and active["failure_code"] is None
    info = active["connection_info"]
    public = info["ports"]["22"]
    assert info["ssh"] == f"ssh -p {public} root@{info['host']}"

    # The real OpenSSH client, non-interactive, with the program's key only.
    local = published_port(engine, rental_id, public)
    result = ssh_until_it_answers(
        ssh_argv(local, ssh_keypair.private_key, "nvidia-smi || hostname", host=info["host"])
    )
    assert result.returncode == 0, result.stderr
    (container,) = rental_containers(engine, rental_id)
    container.reload()
    assert result.stdout.strip() == container.attrs["Config"]["Hostname"]

    # onstart's output is in the logs, fetched from the agent through the socket.
    def logs() -> dict:
        response = program.call("GET", f"/rentals/{rental_id}/logs", params={"tail": 100})
        assert response.status_code == 200, response.text
        return response.json()

    shown = logs()
    deadline = time.monotonic() + 30
    while "onstart says 42" not in shown["lines"] and time.monotonic() < deadline:
        time.sleep(0.5)
        shown = logs()
    assert "onstart says 42" in shown["lines"], shown
    assert shown["truncated"] is False
    assert len(logs()["lines"]) <= 100

    # Labels find the rental again; every filter must match.
    def listed(*labels: str) -> list[str]:
        response = program.call("GET", "/rentals", params={"label": list(labels)})
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert listed("team=ml") == [rental_id]
    assert listed("team=ml", "run=e2e-1") == [rental_id]
    assert listed("team=ml", "run=other") == []
    assert listed("team=cv") == []

    # Another user's program cannot read them.
    stranger = Program(platform.api, api_key(platform, other_user))
    assert stranger.call("GET", f"/rentals/{rental_id}/logs").status_code == 404

    stop = program.call("POST", f"/rentals/{rental_id}/stop")
    assert stop.status_code == 202, stop.text
    done = program.wait_status(rental_id, {"completed"}, 40, f"completed\n{platform.logs()}")
    assert done["phase"] == "ended"
    # The last output stays readable after the end.
    after = wait_until(
        lambda: body if "onstart says 42" in (body := logs())["lines"] else None,
        15,
        interval=0.5,
        what="the final logs kept after the end",
    )
    assert after["truncated"] is False
    assert stranger.call("GET", f"/rentals/{rental_id}/logs").status_code == 404


def test_a_missing_image_ends_cancelled_with_image_not_found(platform, node_with_agent, renter):
    program = Program(platform.api, api_key(platform, renter))
    created = program.call(
        "POST",
        "/rentals",
        json={"node_id": str(node_with_agent.id), "image": "localhost/dc-no-such-image:1"},
    )
    assert created.status_code == 202, created.text
    rental_id = created.json()["rental"]["id"]
    ended = program.wait_status(rental_id, {"cancelled", "active"}, 60, "the rental cancelled")
    assert ended["status"] == "cancelled"
    assert ended["failure_code"] == "image_not_found"
    assert ended["phase"] == "ended"
    assert ended["failure_reason"]


def test_a_registry_password_never_appears_in_logs_or_any_api_response(
    platform, node_with_agent, renter
):
    program = Program(platform.api, api_key(platform, renter))
    secret = f"pw-{uuid.uuid4().hex}"
    created = program.call(
        "POST",
        "/rentals",
        json={
            "node_id": str(node_with_agent.id),
            "image": "registry.invalid/team/private-model:1",
            "registry_auth": {"username": "robot", "password": secret},
        },
        headers={"Idempotency-Key": f"k-{uuid.uuid4()}"},
    )
    assert created.status_code == 202, created.text
    rental_id = created.json()["rental"]["id"]
    assert "registry_auth" not in created.json()["rental"]
    ended = program.wait_status(
        rental_id, {"cancelled", "active"}, 120, f"the rental ended\n{platform.logs()}"
    )
    assert ended["status"] == "cancelled"
    assert ended["failure_code"] in (
        "image_pull_failed",
        "image_not_found",
        "registry_auth_failed",
        "invalid_request",
    )
    program.call("GET", "/rentals")
    program.call("GET", f"/rentals/{rental_id}/logs")

    from tests.rentals.helpers import load_rental

    assert load_rental(rental_id).registry_auth_sealed is None  # not kept after the start
    captured = [Path(p.log_path).read_text(errors="replace") for p in platform.procs]
    captured.append(node_with_agent.agent.log_path.read_text(errors="replace"))
    assert all(secret not in text for text in captured)
    assert all(secret not in body for body in program.responses)
    assert len(program.responses) >= 3
