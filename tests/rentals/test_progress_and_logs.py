"""Progress, start timeouts and logs through the real socket server and worker, with a scripted
agent (tests/fleet/agent_sim.py) that pulls slowly, stalls, never answers or answers with far too
much: behaviour a real agent on this machine cannot be made to show on demand (no registry here to
pull a large image from)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fleet.agent_sim import SimAgent, pending_besides_self_test
from tests.procs import api_server, free_port, running, wait_http, wait_until, worker_process

pytestmark = pytest.mark.slow

START_TIMEOUT = 3  # seconds; RENTAL_START_TIMEOUT_SECONDS of the worker below
LOGS_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def platform(_database) -> Iterator[str]:
    port = free_port()
    with running(
        api_server(port, {"LOGS_TIMEOUT_SECONDS": str(LOGS_TIMEOUT)}, name="progress-api"),
        worker_process(
            {"RENTAL_START_TIMEOUT_SECONDS": str(START_TIMEOUT)}, name="progress-worker"
        ),
    ) as (api, _worker):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=api)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def connected(platform, register_node, host) -> Iterator[Any]:
    """connected() -> (node, SimAgent): a node whose scripted agent said hello and is online."""
    agents: list[SimAgent] = []

    def _connect() -> tuple[Any, SimAgent]:
        node = register_node(host)
        agent = SimAgent(platform, node.api_key, node.id).connect()
        agents.append(agent)
        agent.heartbeat()
        wait_until(
            lambda: (
                requests.get(
                    f"{platform}/api/v1/nodes/{node.id}", headers=host.headers, timeout=5
                ).json()["status"]
                == "online"
            ),
            20,
            what="the node online",
        )
        return node, agent

    yield _connect
    for agent in agents:
        agent.close()


def rent(platform: str, renter, node) -> str:
    response = requests.post(
        f"{platform}/api/v1/rentals",
        headers=renter.headers,
        json={"node_id": str(node.id), "image": "registry.example.com/team/big-model:1"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["rental"]["id"]


def shown(platform: str, renter, rental_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{platform}/api/v1/rentals/{rental_id}", headers=renter.headers, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["rental"]


def started(platform: str, renter, node, agent: SimAgent) -> str:
    """A rental the scripted agent reports running."""
    rental_id = rent(platform, renter, node)
    command = agent.recv_event("start_instance", timeout=15)
    agent.ack(command["id"])
    agent.send("instance_started", {"rental_id": rental_id, "container_id": "c0ffee"})
    wait_until(lambda: shown(platform, renter, rental_id)["status"] == "active", 15, what="active")
    return rental_id


def test_the_welcome_frame_lists_the_optional_events_the_platform_handles(connected):
    _node, agent = connected()
    assert agent.welcome["data"]["features"] == ["instance_progress", "logs"]


def test_a_slow_pull_that_keeps_reporting_progress_outlives_the_start_timeout(
    platform, connected, renter
):
    node, agent = connected()
    rental_id = rent(platform, renter, node)
    command = agent.recv_event("start_instance", timeout=15)
    agent.ack(command["id"])
    assert command["data"]["expires_at"]  # the agent refuses a start that arrives too late

    began = time.monotonic()
    progress = 0.0
    while time.monotonic() - began < START_TIMEOUT * 2.5:  # well past the start timeout
        progress = min(0.95, progress + 0.1)
        agent.send(
            "instance_progress", {"rental_id": rental_id, "phase": "pulling", "progress": progress}
        )
        agent.heartbeat()
        time.sleep(0.8)
    pulling = shown(platform, renter, rental_id)
    assert (pulling["status"], pulling["phase"]) == ("pending", "pulling")
    assert 0.5 <= pulling["progress"] <= 0.95

    agent.send("instance_progress", {"rental_id": rental_id, "phase": "starting", "progress": None})
    wait_until(
        lambda: shown(platform, renter, rental_id)["phase"] == "starting", 10, what="starting"
    )
    agent.send("instance_started", {"rental_id": rental_id, "container_id": "c0ffee"})
    active = wait_until(
        lambda: r if (r := shown(platform, renter, rental_id))["status"] != "pending" else None,
        10,
        what="the rental started",
    )
    assert (active["status"], active["phase"], active["failure_code"]) == (
        "active",
        "running",
        None,
    )
    assert active["progress"] is None


def test_a_pull_that_stalls_is_cancelled_with_start_timeout(platform, connected, renter):
    node, agent = connected()
    rental_id = rent(platform, renter, node)
    command = agent.recv_event("start_instance", timeout=15)
    agent.ack(command["id"])
    agent.send("instance_progress", {"rental_id": rental_id, "phase": "pulling", "progress": 0.2})
    sent_at = time.monotonic()
    ended = wait_until(
        lambda: r if (r := shown(platform, renter, rental_id))["status"] != "pending" else None,
        START_TIMEOUT + 10,
        interval=0.2,
        what="the stalled rental cancelled",
    )
    assert time.monotonic() - sent_at >= START_TIMEOUT - 0.5  # counted from the last progress
    assert ended["status"] == "cancelled"
    assert ended["failure_code"] == "start_timeout"
    assert "no progress" in ended["failure_reason"]
    assert agent.recv_event("stop_instance", timeout=10)["data"]["rental_id"] == rental_id


def test_a_logs_request_to_an_agent_that_never_answers_is_a_504_json(platform, connected, renter):
    node, agent = connected()
    rental_id = started(platform, renter, node, agent)
    began = time.monotonic()
    response = requests.get(
        f"{platform}/api/v1/rentals/{rental_id}/logs", headers=renter.headers, timeout=30
    )
    assert response.status_code == 504
    body = response.json()
    assert body["code"] == 504 and body["status"] == "Gateway Timeout" and body["message"]
    assert LOGS_TIMEOUT <= time.monotonic() - began < LOGS_TIMEOUT + 5
    asked = agent.recv_event("fetch_logs", timeout=5)
    assert asked["data"]["rental_id"] == rental_id
    # The unanswered request is taken back: a reconnecting agent is not asked again.
    assert pending_besides_self_test(node.id) == []


def _ask_logs(platform: str, renter, rental_id: str, tail: int) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def get() -> None:
        response = requests.get(
            f"{platform}/api/v1/rentals/{rental_id}/logs",
            headers=renter.headers,
            params={"tail": tail},
            timeout=30,
        )
        result["status"] = response.status_code
        result["body"] = response.json()

    thread = threading.Thread(target=get)
    thread.start()
    result["thread"] = thread
    return result


def test_an_agents_answer_reaches_the_renter_and_megabytes_are_cut_to_the_bound(
    platform, connected, renter
):
    node, agent = connected()
    rental_id = started(platform, renter, node, agent)

    asked = _ask_logs(platform, renter, rental_id, tail=50)
    request = agent.recv_event("fetch_logs", timeout=10)
    agent.ack(request["id"])
    assert request["data"]["tail"] == 50 and request["data"]["max_bytes"] == 65536
    request_id = request["data"]["request_id"]
    agent.send(
        "logs",
        {"request_id": request_id, "rental_id": rental_id, "lines": ["one", "two"],
         "truncated": False, "seq": 0, "last": True},
    )  # fmt: skip
    asked["thread"].join(15)
    assert asked["status"] == 200
    assert asked["body"] == {"lines": ["one", "two"], "truncated": False}

    # An agent that answers with megabytes (60 KB frames that never say `last`).
    asked = _ask_logs(platform, renter, rental_id, tail=5000)
    request = agent.recv_event("fetch_logs", timeout=10)
    agent.ack(request["id"])
    line = "x" * 599
    for seq in range(30):
        agent.send(
            "logs",
            {"request_id": request["data"]["request_id"], "rental_id": rental_id,
             "lines": [f"{seq:03d}{line}"] * 100, "truncated": False, "seq": seq, "last": False},
        )  # fmt: skip
    asked["thread"].join(15)
    assert asked["status"] == 200, asked
    body = asked["body"]
    assert body["truncated"] is True
    assert sum(len(x.encode()) + 1 for x in body["lines"]) <= 65536
    assert 0 < len(body["lines"]) <= 5000


def test_the_last_output_of_a_stopped_container_is_kept_bounded_and_served_after_the_end(
    platform, connected, renter, other_user
):
    node, agent = connected()
    rental_id = started(platform, renter, node, agent)
    # 3 frames of 60 KB: more than the 64 KiB a rental keeps.
    for seq in range(3):
        agent.send(
            "logs",
            {"request_id": "final", "rental_id": rental_id,
             "lines": [f"final {seq} {i} " + "y" * 580 for i in range(100)],
             "truncated": False, "seq": seq, "last": seq == 2},
        )  # fmt: skip
    agent.send(
        "instance_stopped", {"rental_id": rental_id, "container_id": "c0ffee", "exit_code": 0}
    )
    done = wait_until(
        lambda: r if (r := shown(platform, renter, rental_id))["status"] == "completed" else None,
        15,
        what="completed",
    )
    assert done["phase"] == "ended"

    def logs(user, tail: int = 5000) -> requests.Response:
        return requests.get(
            f"{platform}/api/v1/rentals/{rental_id}/logs",
            headers=user.headers,
            params={"tail": tail},
            timeout=10,
        )

    # Kept: at most 64 KiB and a little (the rest is dropped), in the order the agent sent it.
    body = wait_until(
        lambda: b if (b := logs(renter).json())["truncated"] else None, 10, what="final logs"
    )
    order = [(int(x.split()[1]), int(x.split()[2])) for x in body["lines"]]
    assert order == sorted(order) and len({seq for seq, _ in order}) >= 2
    assert sum(len(x.encode()) + 1 for x in body["lines"]) <= 65536
    assert logs(renter, tail=3).json()["lines"] == body["lines"][-3:]
    stranger = logs(other_user)
    assert stranger.status_code == 404 and stranger.json()["code"] == 404
