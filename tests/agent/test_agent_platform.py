"""The real agent process against the real platform (gunicorn + gevent, a Dramatiq worker) and
the real container engine."""

from __future__ import annotations

import uuid

import pytest

from tests.agent.conftest import IMAGE, node_containers, start_command
from tests.procs import api_server, free_port, running, wait_http, wait_until, worker_process

pytestmark = pytest.mark.slow


@pytest.fixture
def platform_node(register_node, user, engine):
    """A node registered through the API; its containers are removed afterwards."""
    registered = register_node(user)
    yield registered
    for container in node_containers(engine, str(registered.id)):
        container.remove(force=True)
    for network in engine.networks.list(filters={"label": f"dc.node_id={registered.id}"}):
        network.remove()


def _connected(node_id: str) -> bool:
    from app.fleet.live import live_key
    from app.redis_client import get_redis

    return bool(get_redis().hget(live_key(node_id), "agent_version"))


def _containers_of(engine, node_id: str, rental_id: str):
    return engine.containers.list(
        all=True, filters={"label": [f"dc.node_id={node_id}", f"dc.rental_id={rental_id}"]}
    )


def test_commands_sent_while_the_platform_restarts_reach_the_agent_once_it_is_back(
    platform_node, engine, start_agent
):
    from app.fleet.commands import pending_count, send_to_node

    node_id = str(platform_node.id)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = None
    with running(api_server(port, name="agent-e2e-api")) as (api,):
        wait_http(f"{url}/api/v1/health", proc=api)
        agent = start_agent(url, key=platform_node.api_key)
        agent.wait_log(f"connected to the platform as node {node_id}")
        wait_until(lambda: _connected(node_id), 15, what="hello stored")
    agent.wait_log("connection to the platform failed")

    # The platform is down: the command waits in the node's stream.
    rental_id = str(uuid.uuid4())
    send_to_node(node_id, "start_instance", start_command(rental_id))
    assert pending_count(node_id) == 1
    assert _containers_of(engine, node_id, rental_id) == []

    with running(api_server(port, name="agent-e2e-api-again")) as (api,):
        wait_http(f"{url}/api/v1/health", proc=api)
        wait_until(
            lambda: _containers_of(engine, node_id, rental_id),
            30,
            what="the container started after the reconnect",
        )
        wait_until(lambda: pending_count(node_id) == 0, 15, what="the command acknowledged")
        assert agent.log().count(f"connected to the platform as node {node_id}") == 2
    containers = _containers_of(engine, node_id, rental_id)
    assert len(containers) == 1 and containers[0].status == "running"
    assert agent.alive()


def test_an_orphan_container_reported_in_hello_is_stopped_by_the_platform(
    platform_node, engine, start_agent
):
    node_id = str(platform_node.id)
    orphan_rental = str(uuid.uuid4())  # no such rental on the platform
    # Exits on SIGTERM, so the platform's graceful stop does not wait out its grace period.
    engine.containers.run(
        IMAGE,
        ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"],
        detach=True,
        name=f"dc-rental-{orphan_rental}",
        labels={
            "dc.managed": "true",
            "dc.node_id": node_id,
            "dc.rental_id": orphan_rental,
            "dc.ports": "{}",
        },
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(api_server(port, name="agent-e2e-api"), worker_process(name="agent-e2e-worker")):
        wait_http(f"{url}/api/v1/health")
        agent = start_agent(url, key=platform_node.api_key)
        wait_until(
            lambda: _containers_of(engine, node_id, orphan_rental) == [],
            30,
            what="the orphan container removed",
        )
        agent.wait_log(f"rental {orphan_rental} stopped")
        assert agent.alive()


def test_a_rotated_key_is_refused_with_a_plain_message_and_the_agent_keeps_trying(
    platform_node, start_agent, client, user
):
    response = client.post(f"/api/v1/nodes/{platform_node.id}/api-key", headers=user.headers)
    assert response.status_code == 201
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(api_server(port, name="agent-e2e-api")) as (api,):
        wait_http(f"{url}/api/v1/health", proc=api)
        agent = start_agent(url, key=platform_node.api_key)  # the old key
        agent.wait_log("the platform refused the API key (HTTP 401)")
        assert "retrying in 60 s" in agent.log()
        assert agent.alive()
