"""POST /nodes/{id}/drain: hidden from offers, and the agent is told."""

from __future__ import annotations

from app.fleet import commands
from app.marketplace.cache import OFFERS_VERSION_KEY
from app.redis_client import get_redis
from tests.fleet.helpers import node_row


def test_drain_hides_the_node_and_tells_its_agent(client, agents, node):
    agent = agents(node).connect()
    version = int(get_redis().get(OFFERS_VERSION_KEY) or 0)

    response = client.post(f"/api/v1/nodes/{node.id}/drain", headers=node.owner.headers)

    assert response.status_code == 202, response.json
    assert response.json["draining"] is True
    assert node_row(node.id).draining is True
    assert int(get_redis().get(OFFERS_VERSION_KEY) or 0) > version  # offers caches dropped
    frame = agent.recv_event("drain_node", timeout=5)
    assert frame["data"] == {"node_id": str(node.id)}
    agent.ack(frame["id"])


def test_drain_reaches_an_agent_that_connects_later_and_its_welcome_says_draining(
    client, agents, node
):
    assert (
        client.post(f"/api/v1/nodes/{node.id}/drain", headers=node.owner.headers).status_code == 202
    )
    agent = agents(node).connect()
    assert agent.welcome is not None and agent.welcome["data"]["draining"] is True
    assert agent.recv_event("drain_node")["data"]["node_id"] == str(node.id)


def test_drain_of_another_hosts_node_is_not_found_and_changes_nothing(client, node, other_user):
    response = client.post(f"/api/v1/nodes/{node.id}/drain", headers=other_user.headers)
    assert response.status_code == 404
    assert node_row(node.id).draining is False
    assert commands.pending_count(node.id) == 0
