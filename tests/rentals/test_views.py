"""GET /rentals, GET /rentals/{id} and GET /nodes/{id}/rentals."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from app.db import session_scope, utcnow
from app.rentals import actors
from app.rentals.models import Rental
from tests.rentals.helpers import rental_body


def _rent(client, user, node, **overrides):
    response = client.post(
        "/api/v1/rentals", json=rental_body(node.id, **overrides), headers=user.headers
    )
    assert response.status_code == 202, response.json
    return response.json["rental"]["id"]


def test_my_rentals_are_listed_newest_first_a_page_at_a_time(client, renter, online_node):
    ids = [_rent(client, renter, online_node()) for _ in range(5)]
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/rentals", query_string=query, headers=renter.headers).json
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_the_rental_list_can_be_filtered_by_status(client, renter, online_node):
    kept = _rent(client, renter, online_node())
    cancelled = _rent(client, renter, online_node())
    client.post(f"/api/v1/rentals/{cancelled}/stop", headers=renter.headers)
    actors.stop_rental.fn(cancelled, None)
    page = client.get("/api/v1/rentals?status=pending", headers=renter.headers).json
    assert [item["id"] for item in page["items"]] == [kept]
    bad = client.get("/api/v1/rentals?status=running", headers=renter.headers)
    assert bad.status_code == 422


def test_a_tampered_cursor_is_422(client, renter):
    response = client.get("/api/v1/rentals?cursor=bm90LWEtY3Vyc29y", headers=renter.headers)
    assert response.status_code == 422


def test_other_users_do_not_see_my_rentals(client, renter, other_user, online_node):
    rental_id = _rent(client, renter, online_node())
    assert client.get("/api/v1/rentals", headers=other_user.headers).json["items"] == []
    response = client.get(f"/api/v1/rentals/{rental_id}", headers=other_user.headers)
    assert response.status_code == 404


def test_an_active_rental_shows_its_cost_so_far_and_credit_minutes_left(
    client, renter, online_node
):
    node = online_node()
    rental_id = _rent(client, renter, node)
    actors.provision_rental.fn(rental_id)
    actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")
    with session_scope() as session:
        session.get(Rental, uuid.UUID(rental_id)).start_time = utcnow() - timedelta(seconds=150)

    rental = client.get(f"/api/v1/rentals/{rental_id}", headers=renter.headers).json["rental"]
    assert rental["status"] == "active"
    # Billing's estimate per second at 1.2000 per hour: about 150 seconds, 0.0500.
    assert Decimal("0.0500") <= Decimal(rental["cost_so_far"]) <= Decimal("0.0510")
    # 100.0000 less the 0.05 the rental owes since its start, at 0.02 per minute.
    assert rental["credit_minutes_left"] == 4997
    assert rental["connection_info"]["host"] == "127.0.0.1"
    assert set(rental["connection_info"]["ports"]) == {"22", "8080"}


def test_a_pending_rental_has_cost_nothing_so_far(client, renter, online_node):
    rental_id = _rent(client, renter, online_node())
    rental = client.get(f"/api/v1/rentals/{rental_id}", headers=renter.headers).json["rental"]
    assert rental["cost_so_far"] == "0.0000"
    assert rental["credit_minutes_left"] is None


def test_an_admin_can_read_any_rental(client, renter, admin, online_node):
    rental_id = _rent(client, renter, online_node())
    response = client.get(f"/api/v1/rentals/{rental_id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json["rental"]["id"] == rental_id


def test_a_host_sees_the_rentals_on_its_node_without_the_renters_environment(
    client, renter, host, online_node
):
    node = online_node()
    rental_id = _rent(client, renter, node)
    page = client.get(f"/api/v1/nodes/{node.id}/rentals", headers=host.headers).json
    (item,) = page["items"]
    assert item["id"] == rental_id
    assert item["status"] == "pending"
    assert item["cost_per_hour"] == "1.2000"
    assert "env" not in item and "command" not in item and "connection_info" not in item


def test_the_rentals_of_someone_elses_node_are_404(client, renter, online_node):
    node = online_node()
    response = client.get(f"/api/v1/nodes/{node.id}/rentals", headers=renter.headers)
    assert response.status_code == 404
    missing = client.get(f"/api/v1/nodes/{uuid.uuid4()}/rentals", headers=renter.headers)
    assert missing.status_code == 404
