"""Announced maintenance: notice, offers, rentals across a window, the start and end of a window,
cancellation, and reliability that does not count announced windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, update

from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus
from app.fleet.actors import run_maintenance_windows
from app.fleet.models import HostNode, MaintenanceWindow, NodeStatusEvent
from app.rentals.actors import on_instance_stopped, stop_rental
from app.rentals.models import Rental
from tests.fleet.conftest import queued_messages
from tests.fleet.helpers import make_rental, node_row, set_node


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def renter(make_user):
    return make_user("user_renter", email="renter@example.com", balance="100.0000")


@pytest.fixture
def online(node):
    set_node(node.id, status=NodeStatus.ONLINE, last_seen_at=utcnow())
    return node


def _announce(client, node, hours: float = 48, length_hours: float = 4, reason="new PSU"):
    starts = (utcnow() + timedelta(hours=hours)).replace(microsecond=0)
    response = client.post(
        f"/api/v1/nodes/{node.id}/maintenance",
        json={
            "starts_at": _iso(starts),
            "ends_at": _iso(starts + timedelta(hours=length_hours)),
            "reason": reason,
        },
        headers=node.owner.headers,
    )
    return starts, response


def _offer(client, headers, node_id):
    items = client.get("/api/v1/offers", headers=headers).json["items"]
    return next((o for o in items if o["node_id"] == str(node_id)), None)


def _rental(rental_id) -> Rental:
    with session_scope() as session:
        rental = session.get(Rental, rental_id)
        assert rental is not None
        session.expunge(rental)
        return rental


def test_a_window_without_the_minimum_notice_or_ending_before_it_starts_is_a_422(client, online):
    _, soon = _announce(client, online, hours=2)
    assert soon.status_code == 422
    assert "24 hours of notice" in soon.json["message"] and "starts_at" in soon.json["errors"]

    starts = utcnow() + timedelta(days=3)
    backwards = client.post(
        f"/api/v1/nodes/{online.id}/maintenance",
        json={
            "starts_at": _iso(starts),
            "ends_at": _iso(starts - timedelta(hours=1)),
            "reason": "x",
        },
        headers=online.owner.headers,
    )
    assert backwards.status_code == 422 and "ends_at" in backwards.json["errors"]
    listed = client.get(f"/api/v1/nodes/{online.id}/maintenance", headers=online.owner.headers)
    assert listed.json["items"] == []


def test_another_users_node_has_no_maintenance_to_announce(client, online, other_user):
    starts = utcnow() + timedelta(days=3)
    response = client.post(
        f"/api/v1/nodes/{online.id}/maintenance",
        json={
            "starts_at": _iso(starts),
            "ends_at": _iso(starts + timedelta(hours=1)),
            "reason": "x",
        },
        headers=other_user.headers,
    )
    assert response.status_code == 404


def test_an_announced_window_is_listed_and_offers_show_the_node_available_until_its_start(
    client, online, renter
):
    assert _offer(client, renter.headers, online.id).get("available_until") is None
    starts, response = _announce(client, online)
    assert response.status_code == 201, response.json
    window = response.json
    assert window["status"] == "scheduled" and window["reason"] == "new PSU"

    assert _offer(client, renter.headers, online.id)["available_until"] == _iso(starts)
    listed = client.get(f"/api/v1/nodes/{online.id}/maintenance", headers=online.owner.headers)
    assert [w["id"] for w in listed.json["items"]] == [window["id"]]

    _, overlapping = _announce(client, online, hours=49)
    assert overlapping.status_code == 409


def test_renting_across_a_window_is_refused_unless_the_renter_accepts_that_it_ends_at_the_start(
    client, online, renter
):
    starts, _ = _announce(client, online)
    body = {"node_id": str(online.id), "image": "localhost/busybox:latest"}

    refused = client.post("/api/v1/rentals", json=body, headers=renter.headers)
    assert refused.status_code == 409
    assert "accept_maintenance" in refused.json["message"]

    accepted = client.post(
        "/api/v1/rentals", json={**body, "accept_maintenance": True}, headers=renter.headers
    )
    assert accepted.status_code == 202, accepted.json
    rental = accepted.json["rental"]
    assert rental["maintenance"]["reason"] == "new PSU"
    assert datetime.fromisoformat(rental["maintenance"]["starts_at"]) == starts
    shown = client.get(f"/api/v1/rentals/{rental['id']}", headers=renter.headers).json["rental"]
    assert shown["maintenance"] == rental["maintenance"]


def test_at_the_start_the_node_drains_its_rental_ends_with_reason_maintenance_before_the_window(
    client, online, renter
):
    starts, response = _announce(client, online)
    window_id = response.json["id"]
    set_node(online.id, status=NodeStatus.BUSY)
    rental_id = make_rental(online.id, renter.id, container_id="c0ffee")
    listed = client.get("/api/v1/rentals", headers=renter.headers).json["items"]
    assert listed[0]["maintenance"]["reason"] == "new PSU"  # the renter sees what is coming

    run_maintenance_windows.fn(now=(starts - timedelta(seconds=30)).timestamp())

    assert node_row(online.id).maintenance is True
    stops = [m for m in queued_messages("rentals") if m["actor_name"] == "stop_rental"]
    assert [m["kwargs"] for m in stops] == [{"rental_id": str(rental_id), "reason": "maintenance"}]
    # What the rentals worker does with it, and the agent's answer:
    stop_rental.fn(**stops[0]["kwargs"])
    on_instance_stopped.fn(
        node_id=str(online.id), rental_id=str(rental_id), container_id="c0ffee", exit_code=0
    )
    ended = _rental(rental_id)
    assert ended.status == RentalStatus.COMPLETED and ended.failure_reason == "maintenance"
    assert ended.end_time is not None and ended.end_time < starts  # nothing billed inside

    run_maintenance_windows.fn(now=starts.timestamp())  # the node freed by the rental moves on
    assert node_row(online.id).status == NodeStatus.MAINTENANCE
    assert _offer(client, renter.headers, online.id) is None
    window = client.get(f"/api/v1/nodes/{online.id}/maintenance", headers=online.owner.headers)
    assert window.json["items"][0]["status"] == "in_progress"

    set_node(online.id, last_seen_at=utcnow())
    run_maintenance_windows.fn(now=(starts + timedelta(hours=4)).timestamp())
    row = node_row(online.id)
    assert row.status == NodeStatus.ONLINE and row.maintenance is False
    with session_scope() as session:
        assert session.get(MaintenanceWindow, window_id).finished_at is not None
    assert _offer(client, renter.headers, online.id).get("available_until") is None


def test_a_cancelled_window_no_longer_limits_offers_or_rentals(client, online, renter):
    _, response = _announce(client, online)
    window_id = response.json["id"]

    cancelled = client.delete(
        f"/api/v1/nodes/{online.id}/maintenance/{window_id}", headers=online.owner.headers
    )
    assert cancelled.status_code == 204
    again = client.delete(
        f"/api/v1/nodes/{online.id}/maintenance/{window_id}", headers=online.owner.headers
    )
    assert again.status_code == 204  # asking again changes nothing

    assert _offer(client, renter.headers, online.id).get("available_until") is None
    listed = client.get(f"/api/v1/nodes/{online.id}/maintenance", headers=online.owner.headers)
    assert listed.json["items"][0]["status"] == "cancelled"
    rented = client.post(
        "/api/v1/rentals",
        json={"node_id": str(online.id), "image": "localhost/busybox:latest"},
        headers=renter.headers,
    )
    assert rented.status_code == 202, rented.json
    run_maintenance_windows.fn(now=(utcnow() + timedelta(days=3)).timestamp())
    assert node_row(online.id).maintenance is False


def test_cancelling_a_window_in_progress_gives_the_node_back_at_once(client, online):
    starts, response = _announce(client, online)
    run_maintenance_windows.fn(now=starts.timestamp())
    assert node_row(online.id).status == NodeStatus.MAINTENANCE

    cancelled = client.delete(
        f"/api/v1/nodes/{online.id}/maintenance/{response.json['id']}",
        headers=online.owner.headers,
    )
    assert cancelled.status_code == 204
    row = node_row(online.id)
    assert row.status == NodeStatus.ONLINE and row.maintenance is False


def test_reliability_does_not_count_an_announced_window_and_its_inputs_come_with_the_node(
    client, node
):
    now = utcnow()
    with session_scope() as session:
        session.execute(
            update(HostNode)
            .where(HostNode.id == node.id)
            .values(created_at=now - timedelta(days=30))
        )
        session.execute(delete(NodeStatusEvent).where(NodeStatusEvent.node_id == node.id))
        # Online all week except one day offline, inside an announced (and begun) window.
        for days_ago, status in (
            (8, NodeStatus.ONLINE),
            (3, NodeStatus.OFFLINE),
            (2, NodeStatus.ONLINE),
        ):
            session.add(
                NodeStatusEvent(node_id=node.id, status=status, at=now - timedelta(days=days_ago))
            )
        session.add(
            MaintenanceWindow(
                node_id=node.id,
                starts_at=now - timedelta(days=3),
                ends_at=now - timedelta(days=2),
                reason="disk swap",
                began_at=now - timedelta(days=3),
                finished_at=now - timedelta(days=2),
            )
        )

    shown = client.get(f"/api/v1/nodes/{node.id}", headers=node.owner.headers).json
    reliability = shown["reliability"]
    assert reliability["window_days"] == 7 and reliability["fresh"] is False
    assert reliability["maintenance_seconds"] == pytest.approx(86400, abs=2)
    assert reliability["tracked_seconds"] == pytest.approx(6 * 86400, abs=2)
    assert reliability["online_seconds"] == pytest.approx(6 * 86400, abs=2)
    assert Decimal(str(reliability["score"])) == Decimal("1")

    from app.marketplace.models import NodeReliability
    from app.marketplace.reliability import refresh_reliability

    with session_scope() as session:
        refresh_reliability(session)
        assert session.get(NodeReliability, node.id).reliability == Decimal("1.0000")


def test_a_node_registered_today_is_fresh_and_judged_on_its_life(client, node):
    shown = client.get(f"/api/v1/nodes/{node.id}", headers=node.owner.headers).json
    assert shown["reliability"]["fresh"] is True
    assert shown["reliability"]["tracked_seconds"] < 60
    assert shown["reliability"]["online_seconds"] == 0
