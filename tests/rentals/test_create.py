"""POST /rentals: who may rent what, at which price, and bad input."""

from __future__ import annotations

import uuid

import pytest

from app.enums import NodeStatus, RentalStatus
from app.redis_client import get_redis
from tests.fixtures import set_balance
from tests.rentals.helpers import load_rental, rental_body, rental_count, set_node_status

URL = "/api/v1/rentals"


def _queued(actor_name: str) -> list[str]:
    """The messages waiting on the rentals queue for one actor (read from the real broker)."""
    import json

    redis = get_redis()
    return [
        m for m in redis.hvals("dramatiq:rentals.msgs") if json.loads(m)["actor_name"] == actor_name
    ]


def test_renting_an_online_node_writes_a_pending_rental_at_the_locked_price(
    client, renter, online_node
):
    node = online_node()
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)

    assert response.status_code == 202, response.json
    rental = response.json["rental"]
    assert rental["status"] == "pending"
    assert rental["node_id"] == str(node.id)
    assert rental["cost_per_hour"] == "1.2000"
    assert rental["ports"] == [22, 8080]
    assert rental["env"] == {"GREETING": "hi"}
    assert rental["command"] == ["sleep", "3600"]
    assert rental["connection_info"] is None
    assert len(_queued("provision_rental")) == 1
    assert str(load_rental(rental["id"]).cost_per_hour) == "1.2000"


def test_a_rental_keeps_its_price_when_the_host_changes_it_later(client, renter, host, online_node):
    node = online_node()
    rental = client.post(URL, json=rental_body(node.id), headers=renter.headers).json["rental"]
    changed = client.patch(
        f"/api/v1/nodes/{node.id}",
        json={"pricing": {"hourly_rate": "9.0000"}},
        headers=host.headers,
    )
    assert changed.status_code == 200, changed.json
    shown = client.get(f"{URL}/{rental['id']}", headers=renter.headers).json["rental"]
    assert shown["cost_per_hour"] == "1.2000"


def test_renting_a_node_that_does_not_exist_is_404(client, renter):
    response = client.post(URL, json=rental_body(uuid.uuid4()), headers=renter.headers)
    assert response.status_code == 404
    assert response.json["message"] == "No such node."
    assert rental_count() == 0


def _hidden_like_a_missing_node(response) -> None:
    assert response.status_code == 404, response.json
    assert response.json["message"] == "No such node."
    assert rental_count() == 0


def test_renting_someone_elses_offline_node_is_404_as_if_it_did_not_exist(
    client, renter, register_node, host
):
    node = register_node(host)  # never connected: offline
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    _hidden_like_a_missing_node(response)


def test_rental_on_busy_node_is_rejected(client, renter, online_node):
    node = online_node()
    set_node_status(node.id, NodeStatus.BUSY)
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    assert response.status_code == 409
    assert response.json["message"] == "The node is already rented."
    assert rental_count() == 0


def test_renting_someone_elses_node_in_maintenance_is_404(client, renter, online_node):
    node = online_node()
    set_node_status(node.id, NodeStatus.MAINTENANCE, maintenance=True)
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    _hidden_like_a_missing_node(response)


def test_renting_someone_elses_draining_node_is_404(client, renter, online_node):
    node = online_node()
    from app.db import session_scope
    from app.fleet.models import HostNode

    with session_scope() as session:
        session.get(HostNode, node.id).draining = True
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    _hidden_like_a_missing_node(response)


def test_renting_a_node_that_must_reconcile_with_its_agent_is_404(client, renter, online_node):
    node = online_node()
    from app.db import session_scope
    from app.fleet.models import HostNode

    with session_scope() as session:
        session.get(HostNode, node.id).needs_reconcile = True
    response = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    _hidden_like_a_missing_node(response)


def test_a_second_rental_of_a_node_with_a_pending_rental_is_rejected(
    client, renter, make_user, online_node
):
    node = online_node()
    first = client.post(URL, json=rental_body(node.id), headers=renter.headers)
    assert first.status_code == 202
    other = make_user("user_second", balance="100.0000")
    second = client.post(URL, json=rental_body(node.id), headers=other.headers)
    assert second.status_code == 409
    assert rental_count() == 1


def test_renting_ones_own_node_is_forbidden(client, host, online_node):
    node = online_node()
    set_balance(host.id, "100.0000")
    response = client.post(URL, json=rental_body(node.id), headers=host.headers)
    assert response.status_code == 409
    assert response.json["message"] == "You cannot rent your own node."
    assert rental_count() == 0


def test_a_balance_below_the_minimum_minutes_is_402(client, make_user, online_node):
    node = online_node()  # 1.2000 per hour: 60 minutes need 1.2000
    poor = make_user("user_poor", balance="1.1999")
    response = client.post(URL, json=rental_body(node.id), headers=poor.headers)
    assert response.status_code == 402
    assert "1.2000" in response.json["message"]
    assert rental_count() == 0


def test_a_balance_of_exactly_the_minimum_is_enough(client, make_user, online_node):
    node = online_node()
    exact = make_user("user_exact", balance="1.2000")
    response = client.post(URL, json=rental_body(node.id), headers=exact.headers)
    assert response.status_code == 202, response.json


def test_the_minimum_balance_counts_the_renters_running_rentals(client, make_user, online_node):
    first, second = online_node(), online_node()
    renter = make_user("user_two_nodes", balance="2.0000")
    assert client.post(URL, json=rental_body(first.id), headers=renter.headers).status_code == 202
    response = client.post(URL, json=rental_body(second.id), headers=renter.headers)
    assert response.status_code == 402  # 2 x 1.2000 per hour > 2.0000
    assert rental_count() == 1


def test_a_max_hourly_rate_below_the_price_is_409(client, renter, online_node):
    node = online_node()
    response = client.post(
        URL, json=rental_body(node.id, max_hourly_rate="1.1999"), headers=renter.headers
    )
    assert response.status_code == 409
    assert "max_hourly_rate" in response.json["message"]
    ok = client.post(
        URL, json=rental_body(node.id, max_hourly_rate="1.2000"), headers=renter.headers
    )
    assert ok.status_code == 202


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"image": "Not A Valid::Image"}, "image"),
        ({"image": ""}, "image"),
        ({"env": {"A": 1}}, "env"),
        ({"env": {"A": None}}, "env"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": ["A=1"]}, "env"),
        ({"ports": [0]}, "ports"),
        ({"ports": [65536]}, "ports"),
        ({"ports": [22, 22]}, "ports"),
        ({"ports": ["22"]}, "ports"),
        ({"ports": list(range(1000, 1021))}, "ports"),
        ({"command": "sleep 1"}, "command"),
        ({"command": []}, "command"),
        ({"max_hourly_rate": 1.5}, "max_hourly_rate"),
        ({"node_id": "not-a-uuid"}, "node_id"),
    ],
)
def test_bad_rental_input_is_422_and_writes_nothing(client, renter, online_node, overrides, field):
    node = online_node()
    body = {**rental_body(node.id), **overrides}
    response = client.post(URL, json=body, headers=renter.headers)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]
    assert rental_count() == 0


def test_a_rental_request_without_a_token_is_401(client, online_node):
    node = online_node()
    assert client.post(URL, json=rental_body(node.id)).status_code == 401


def test_the_same_idempotency_key_returns_the_first_rental_and_creates_one(
    client, renter, online_node
):
    node = online_node()
    headers = {**renter.headers, "Idempotency-Key": "rent-1"}
    first = client.post(URL, json=rental_body(node.id), headers=headers)
    again = client.post(URL, json=rental_body(node.id), headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json["rental"]["id"] == first.json["rental"]["id"]
    assert rental_count() == 1
    assert len(_queued("provision_rental")) == 1


def test_an_idempotency_key_reused_for_another_request_is_409(client, renter, online_node):
    node = online_node()
    headers = {**renter.headers, "Idempotency-Key": "rent-2"}
    assert client.post(URL, json=rental_body(node.id), headers=headers).status_code == 202
    other = client.post(URL, json=rental_body(node.id, image="busybox:1"), headers=headers)
    assert other.status_code == 409
    assert rental_count() == 1


def test_a_refused_rental_leaves_its_idempotency_key_free(client, make_user, online_node):
    node = online_node()
    renter = make_user("user_topup", balance="0.0000")
    headers = {**renter.headers, "Idempotency-Key": "rent-3"}
    assert client.post(URL, json=rental_body(node.id), headers=headers).status_code == 402
    set_balance(renter.id, "10.0000")
    retry = client.post(URL, json=rental_body(node.id), headers=headers)
    assert retry.status_code == 202, retry.json
    assert load_rental(retry.json["rental"]["id"]).status == RentalStatus.PENDING
