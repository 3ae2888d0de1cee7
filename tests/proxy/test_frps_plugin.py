"""The frps server-plugin endpoint, with request bodies as frps sends them.

frps itself cannot be installed here; these calls are exactly what its HTTP plugin client posts
(`POST <path>?version=0.1.0&op=<Op>` with `{"version", "op", "content"}`).
"""

from __future__ import annotations

import json

import pytest

from app.db import session_scope
from app.enums import NodeStatus
from app.fleet.commands import pending
from app.proxy.models import PortAllocation
from app.rentals import actors
from tests.rentals.helpers import live_allocations, load_node, rental_body

SECRET = "test-plugin-secret"


def plugin(client, op, content, secret=SECRET):
    return client.post(
        f"/api/v1/proxy/frps-plugin/{secret}?version=0.1.0&op={op}",
        json={"version": "0.1.0", "op": op, "content": content},
    )


@pytest.fixture
def tunnel(client, renter, online_node):
    """A provisioned rental: its node's tunnel settings (as sent in start_instance) and ports."""
    node = online_node()
    response = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ports=[22, 8080]), headers=renter.headers
    )
    rental_id = response.json["rental"]["id"]
    actors.provision_rental.fn(rental_id)
    start = json.loads(pending(str(node.id))[0][1])["data"]
    return {
        "node": node,
        "rental_id": rental_id,
        "tunnel": start["tunnel"],
        "ports": start["proxy_port_mapping"],
    }


def login_content(tunnel, **overrides):
    content = {
        "version": "0.61.0",
        "hostname": "",
        "os": "linux",
        "arch": "amd64",
        "user": tunnel["tunnel"]["user"],
        "timestamp": 1767000000,
        "privilege_key": "0123abcd",
        "run_id": "a1b2c3",
        "pool_count": 1,
        "metas": dict(tunnel["tunnel"]["metadatas"]),
        "client_address": "10.0.0.5:40001",
    }
    content.update(overrides)
    return content


def new_proxy_content(tunnel, port, **overrides):
    user = tunnel["tunnel"]["user"]
    content = {
        "user": {"user": user, "metas": dict(tunnel["tunnel"]["metadatas"]), "run_id": "a1b2c3"},
        "proxy_name": f"{user}.rental-{tunnel['rental_id']}-22",
        "proxy_type": "tcp",
        "use_encryption": False,
        "use_compression": False,
        "bandwidth_limit": "",
        "bandwidth_limit_mode": "client",
        "group": "",
        "group_key": "",
        "remote_port": port,
        "metas": {"rental_id": tunnel["rental_id"]},
    }
    content.update(overrides)
    return content


ALLOW = {"reject": False, "unchange": True}


def test_a_login_from_a_known_node_is_allowed_unchanged(client, tunnel):
    response = plugin(client, "Login", login_content(tunnel))
    assert response.status_code == 200
    assert response.json == ALLOW
    assert response.json["unchange"] is True


def test_a_login_with_a_forged_token_is_rejected(client, tunnel):
    metas = {**tunnel["tunnel"]["metadatas"], "node_token": "0" * 64}
    response = plugin(client, "Login", login_content(tunnel, metas=metas))
    assert response.status_code == 200
    assert response.json["reject"] is True
    assert "node_token" in response.json["reject_reason"]


def test_a_login_claiming_another_node_is_rejected(client, tunnel, online_node):
    other = online_node()
    response = plugin(client, "Login", login_content(tunnel, user=f"node-{other.id}"))
    assert response.json["reject"] is True


@pytest.mark.parametrize(
    "content",
    [
        {"user": "someone", "metas": {}},
        {"user": "node-not-a-uuid", "metas": {}},
        {"metas": {}},
        {"user": "node-6a1f0c1e-0000-4000-8000-000000000000"},
        {"user": "node-6a1f0c1e-0000-4000-8000-000000000000", "metas": "x"},
        {
            "user": "node-6a1f0c1e-0000-4000-8000-000000000000",
            "metas": {
                "node_id": "6a1f0c1e-0000-4000-8000-000000000000",
                "key_id": "zz",
                "node_token": "00",
            },
        },
    ],
)
def test_a_login_from_an_unknown_node_is_rejected(client, content):
    response = plugin(client, "Login", content)
    assert response.status_code == 200
    assert response.json["reject"] is True
    assert response.json["reject_reason"]


def test_a_login_after_the_nodes_key_was_rotated_is_rejected(client, tunnel, host):
    node = tunnel["node"]
    rotated = client.post(f"/api/v1/nodes/{node.id}/api-key", headers=host.headers)
    assert rotated.status_code == 201
    response = plugin(client, "Login", login_content(tunnel))
    assert response.json["reject"] is True
    assert "revoked" in response.json["reject_reason"]


def test_a_new_proxy_on_an_allocated_port_is_allowed_and_recorded(client, tunnel):
    port = tunnel["ports"]["22"]
    response = plugin(client, "NewProxy", new_proxy_content(tunnel, port))
    assert response.json == ALLOW
    (allocation,) = [a for a in live_allocations(tunnel["rental_id"]) if a.port == port]
    assert allocation.proxy_name == f"node-{tunnel['node'].id}.rental-{tunnel['rental_id']}-22"
    assert allocation.proxy_opened_at is not None


def test_a_new_proxy_on_a_port_not_allocated_is_rejected(client, tunnel, settings):
    low, high = settings.proxy_port_range
    taken = set(tunnel["ports"].values())
    free = next(p for p in range(low, high + 1) if p not in taken)
    for port in (free, 22, high + 1):
        response = plugin(client, "NewProxy", new_proxy_content(tunnel, port))
        assert response.json["reject"] is True, port
        assert "not allocated" in response.json["reject_reason"]


def test_a_new_proxy_on_another_nodes_port_is_rejected(client, tunnel, renter, online_node):
    other = online_node()
    rental = client.post(
        "/api/v1/rentals", json=rental_body(other.id, ports=[80]), headers=renter.headers
    ).json["rental"]
    actors.provision_rental.fn(rental["id"])
    (their_port,) = [a.port for a in live_allocations(rental["id"])]
    response = plugin(client, "NewProxy", new_proxy_content(tunnel, their_port))
    assert response.json["reject"] is True


def test_a_new_proxy_without_a_remote_port_is_rejected(client, tunnel):
    content = new_proxy_content(tunnel, 0)
    del content["remote_port"]  # frps leaves it out when it is 0
    response = plugin(client, "NewProxy", content)
    assert response.json["reject"] is True
    assert "remote_port" in response.json["reject_reason"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"proxy_type": "http"},
        {"remote_port": "22"},
        {"remote_port": True},
        {"user": "node-x"},
        {"user": {"user": "node-x", "metas": {}}},
    ],
)
def test_a_malformed_new_proxy_is_rejected(client, tunnel, overrides):
    content = new_proxy_content(tunnel, tunnel["ports"]["22"], **overrides)
    response = plugin(client, "NewProxy", content)
    assert response.status_code == 200
    assert response.json["reject"] is True


def test_a_new_proxy_for_an_ended_rental_is_rejected(client, tunnel):
    node = tunnel["node"]
    port = tunnel["ports"]["22"]
    actors.on_instance_failed.fn(str(node.id), tunnel["rental_id"], "no")
    response = plugin(client, "NewProxy", new_proxy_content(tunnel, port))
    assert response.json["reject"] is True


def test_close_proxy_records_when_the_tunnel_closed(client, tunnel):
    port = tunnel["ports"]["22"]
    content = new_proxy_content(tunnel, port)
    plugin(client, "NewProxy", content)
    response = plugin(
        client, "CloseProxy", {"user": content["user"], "proxy_name": content["proxy_name"]}
    )
    assert response.status_code == 200
    assert response.json == ALLOW
    with session_scope() as session:
        allocation = session.query(PortAllocation).filter_by(port=port).one()
        assert allocation.proxy_closed_at is not None
        assert allocation.released_at is None  # the rental still holds the port


def test_a_wrong_secret_is_404_json(client, tunnel):
    response = plugin(client, "Login", login_content(tunnel), secret="wrong-secret")
    assert response.status_code == 404
    assert response.is_json
    assert response.json["code"] == 404


@pytest.mark.parametrize("body", ["not json", "[]", "{}", '{"op": 7, "content": {}}'])
def test_a_body_that_is_not_a_plugin_call_is_400_json(client, body):
    response = client.post(
        f"/api/v1/proxy/frps-plugin/{SECRET}", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.is_json


def test_a_plugin_call_without_content_is_rejected(client):
    response = client.post(
        f"/api/v1/proxy/frps-plugin/{SECRET}?op=Login", json={"version": "0.1.0", "op": "Login"}
    )
    assert response.status_code == 200
    assert response.json["reject"] is True


def test_an_unknown_plugin_op_is_400(client):
    response = plugin(client, "Explode", {})
    assert response.status_code == 400
    assert "Explode" in response.json["message"]


def test_ops_without_a_policy_pass_unchanged(client):
    assert plugin(client, "Ping", {"user": {}, "timestamp": 1}).json == ALLOW


def test_a_rejected_new_proxy_changes_no_allocation(client, tunnel):
    before = {(a.port, a.proxy_name) for a in live_allocations()}
    plugin(client, "NewProxy", new_proxy_content(tunnel, 1))
    assert {(a.port, a.proxy_name) for a in live_allocations()} == before
    assert load_node(tunnel["node"].id).status == NodeStatus.BUSY


def _closed_at(port):
    with session_scope() as session:
        return session.query(PortAllocation).filter_by(port=port).one().proxy_closed_at


def test_close_proxy_with_a_forged_node_identity_is_rejected_and_records_nothing(client, tunnel):
    port = tunnel["ports"]["22"]
    content = new_proxy_content(tunnel, port)
    plugin(client, "NewProxy", content)
    forged_user = {**content["user"], "metas": {**content["user"]["metas"], "node_token": "0" * 64}}
    for user in (forged_user, {"user": content["user"]["user"]}):
        response = plugin(client, "CloseProxy", {"user": user, "proxy_name": content["proxy_name"]})
        assert response.status_code == 200
        assert response.json["reject"] is True
    assert _closed_at(port) is None


def test_close_proxy_from_another_node_does_not_close_this_nodes_proxy(
    client, tunnel, renter, online_node
):
    port = tunnel["ports"]["22"]
    content = new_proxy_content(tunnel, port)
    plugin(client, "NewProxy", content)
    other = online_node()
    rented = client.post(
        "/api/v1/rentals", json=rental_body(other.id, ports=[22]), headers=renter.headers
    )
    actors.provision_rental.fn(rented.json["rental"]["id"])
    other_tunnel = json.loads(pending(str(other.id))[0][1])["data"]["tunnel"]
    other_user = {"user": other_tunnel["user"], "metas": other_tunnel["metadatas"], "run_id": "x"}

    response = plugin(
        client, "CloseProxy", {"user": other_user, "proxy_name": content["proxy_name"]}
    )
    assert response.json == ALLOW  # a valid node, closing nothing of its own
    assert _closed_at(port) is None


def test_the_plugin_secret_may_come_in_a_header_for_proxies_that_can_add_one(client, tunnel):
    body = {"version": "0.1.0", "op": "Login", "content": login_content(tunnel)}
    ok = client.post(
        "/api/v1/proxy/frps-plugin?op=Login", json=body, headers={"X-Plugin-Secret": SECRET}
    )
    assert ok.status_code == 200 and ok.json == ALLOW
    for headers in ({}, {"X-Plugin-Secret": "wrong"}):
        refused = client.post("/api/v1/proxy/frps-plugin?op=Login", json=body, headers=headers)
        assert refused.status_code == 404 and refused.is_json
