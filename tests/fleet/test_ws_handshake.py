"""The agent socket's handshake: 401 before the upgrade for a bad key, welcome for a good one."""

from __future__ import annotations

import pytest
import requests
import websocket

from tests.fleet.agent_sim import SimAgent

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def _handshake_status(base_url: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{base_url}/ws/agent", headers={**UPGRADE, **headers}, timeout=5)


def test_handshake_without_a_key_is_refused_with_401_before_the_upgrade(fleet_server):
    response = _handshake_status(fleet_server, {})
    assert response.status_code == 401
    assert response.json()["code"] == 401
    assert "Sec-WebSocket-Accept" not in response.headers


def test_handshake_with_an_unknown_key_is_refused_with_401(fleet_server, node):
    forged = node.api_key[:-4] + ("AAAA" if not node.api_key.endswith("AAAA") else "BBBB")
    for key in (forged, "dcn_" + "x" * 43, "not-a-node-key"):
        response = _handshake_status(fleet_server, {"Authorization": f"Bearer {key}"})
        assert response.status_code == 401, key
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        SimAgent(fleet_server, forged, node.id).connect()
    assert exc.value.status_code == 401


def test_valid_key_gets_a_welcome_naming_its_node(agents, node):
    agent = agents(node).connect(hello=False)
    assert agent.welcome is not None
    assert agent.welcome["data"]["node_id"] == str(node.id)
    assert agent.welcome["data"]["draining"] is False


def test_welcome_carries_the_tunnel_settings_so_a_restarted_agent_rebuilds_its_proxies(
    agents, node
):
    tunnel = agents(node).connect(hello=False).welcome["data"]["tunnel"]
    assert tunnel["user"] == f"node-{node.id}"
    assert tunnel["token"] == "test-frps-token"
    assert tunnel["metadatas"]["node_id"] == str(node.id)
    assert tunnel["metadatas"]["node_token"]  # the proof the frps plugin checks at Login


def test_rotated_key_is_refused_and_its_live_connection_closed(client, agents, node, fleet_server):
    agent = agents(node).connect()
    rotated = client.post(f"/api/v1/nodes/{node.id}/api-key", headers=node.owner.headers)
    assert rotated.status_code == 201

    code, _reason = agent.wait_closed()
    assert code == 4001
    response = _handshake_status(fleet_server, {"Authorization": f"Bearer {node.api_key}"})
    assert response.status_code == 401
    fresh = agents(node, api_key=rotated.json["api_key"]).connect()
    assert fresh.welcome is not None
