"""Fleet test processes: the real socket server (gunicorn + gevent) and a fleet worker."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet.agent_sim import SimAgent
from tests.procs import Proc, free_port, running, wait_http

SERVER_ENV = {"METRICS_FLUSH_SECONDS": "0.2"}


@pytest.fixture(scope="package")
def fleet_server(_database) -> Iterator[str]:
    """Base URL of a platform server as production runs it."""
    from tests.procs import api_server

    port = free_port()
    with running(api_server(port, SERVER_ENV, name="fleet-api")) as (proc,):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="package")
def fleet_worker(_database) -> Iterator[Proc]:
    """A worker for the fleet queue only: rental events stay queued where tests can read them.

    Package-scoped: it must be gone before other packages' tests, whose own workers would
    otherwise race it for the `system` queue.
    """
    proc = Proc(
        "fleet-worker",
        [
            sys.executable,
            "-m",
            "dramatiq",
            "workers",
            "--processes",
            "1",
            "--threads",
            "2",
            "--queues",
            "fleet",
            "system",
        ],
    )
    with running(proc):
        yield proc


@pytest.fixture
def agents(fleet_server) -> Iterator[Any]:
    """agents(node) -> an unconnected SimAgent for the node; every one is closed afterwards."""
    made: list[SimAgent] = []

    def _make(node: Any, api_key: str | None = None, base_url: str | None = None) -> SimAgent:
        agent = SimAgent(base_url or fleet_server, api_key or node.api_key, node.id)
        made.append(agent)
        return agent

    yield _make
    for agent in made:
        agent.close()


def queued_messages(queue: str) -> list[dict[str, Any]]:
    """Dramatiq messages waiting on `queue` (no worker consumes it in these tests)."""
    from app.redis_client import get_redis

    return [json.loads(raw) for raw in get_redis().hvals(f"dramatiq:{queue}.msgs")]
