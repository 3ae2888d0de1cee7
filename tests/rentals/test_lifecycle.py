"""The rental lifecycle as the workers run it: actors called directly on the real database."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from app.db import session_scope, utcnow
from app.enums import NodeStatus, RentalStatus
from app.errors import InvalidTransition
from app.fleet.commands import pending
from app.rentals import actors
from app.rentals.models import Rental
from app.rentals.state import transition_rental
from tests.rentals.helpers import (
    all_allocations,
    backdate_node_status,
    backdate_rental,
    live_allocations,
    load_node,
    load_rental,
    rental_body,
    set_node_status,
)


def commands(node_id) -> list[dict]:
    """The commands waiting in the node's stream for its agent, oldest first."""
    return [json.loads(frame) for _entry, frame in pending(str(node_id))]


@pytest.fixture
def rent(client, renter, online_node):
    """rent(**body overrides) -> (rental id, node): a pending rental made through the API."""

    def _rent(node=None, **overrides):
        node = node or online_node()
        response = client.post(
            "/api/v1/rentals", json=rental_body(node.id, **overrides), headers=renter.headers
        )
        assert response.status_code == 202, response.json
        return response.json["rental"]["id"], node

    return _rent


@pytest.fixture
def provisioned(rent):
    def _provisioned(**overrides):
        rental_id, node = rent(**overrides)
        actors.provision_rental.fn(rental_id)
        return rental_id, node

    return _provisioned


@pytest.fixture
def active(provisioned):
    def _active(**overrides):
        rental_id, node = provisioned(**overrides)
        actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")
        return rental_id, node

    return _active


def test_provisioning_reserves_the_node_allocates_ports_and_sends_start_instance(
    provisioned, settings
):
    rental_id, node = provisioned()

    assert load_node(node.id).status == NodeStatus.BUSY
    ports = {a.container_port: a.port for a in live_allocations(rental_id)}
    assert set(ports) == {22, 8080}
    low, high = settings.proxy_port_range
    assert all(low <= p <= high for p in ports.values())
    assert len(set(ports.values())) == 2

    (frame,) = commands(node.id)
    assert frame["event"] == "start_instance"
    data = frame["data"]
    assert data["rental_id"] == rental_id
    assert data["image"] == "localhost/busybox:latest"
    assert data["command"] == ["sleep", "3600"]
    assert data["env_vars"] == {"GREETING": "hi"}
    assert data["proxy_port_mapping"] == {"22": ports[22], "8080": ports[8080]}
    assert data["resource_limits"] == {
        "gpu_indices": ["0", "1"],
        "cpu_cores": 16.0,
        "ram_limit": "65536m",
    }
    tunnel = data["tunnel"]
    assert tunnel["server_addr"] == settings.frps_addr
    assert tunnel["server_port"] == settings.frps_port
    assert tunnel["token"] == settings.frps_token
    assert tunnel["user"] == f"node-{node.id}"
    assert tunnel["metadatas"]["node_id"] == str(node.id)
    assert set(tunnel["metadatas"]) == {"node_id", "key_id", "node_token"}
    assert node.api_key not in json.dumps(frame)


def test_provisioning_schedules_the_start_timeout_check(provisioned):
    from app.redis_client import get_redis

    provisioned()
    delayed = [json.loads(m) for m in get_redis().hvals("dramatiq:rentals.DQ.msgs")]
    assert [m["actor_name"] for m in delayed] == ["check_start_timeout"]
    assert delayed[0]["options"]["eta"] > 0


def test_provisioning_again_allocates_nothing_twice(provisioned):
    rental_id, node = provisioned()
    before = {(a.container_port, a.port) for a in live_allocations(rental_id)}
    (first,) = commands(node.id)
    actors.provision_rental.fn(rental_id)

    assert {(a.container_port, a.port) for a in all_allocations(rental_id)} == before
    (again,) = commands(node.id)  # the repeated start replaced the queued one
    assert again["event"] == "start_instance" and again["id"] != first["id"]
    assert again["data"]["proxy_port_mapping"] == first["data"]["proxy_port_mapping"]
    assert load_node(node.id).status == NodeStatus.BUSY


def test_provisioning_a_rental_whose_node_went_offline_cancels_it(rent):
    rental_id, node = rent()
    set_node_status(node.id, NodeStatus.OFFLINE)
    actors.provision_rental.fn(rental_id)

    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.CANCELLED
    assert rental.failure_reason == "the node went offline before the rental started"
    assert rental.end_time is not None
    assert all_allocations(rental_id) == []
    assert commands(node.id) == []
    assert load_node(node.id).status == NodeStatus.OFFLINE


def test_provisioning_a_rental_with_no_ports_sends_an_empty_mapping(provisioned):
    rental_id, node = provisioned(ports=[])
    assert commands(node.id)[0]["data"]["proxy_port_mapping"] == {}
    actors.on_instance_started.fn(str(node.id), rental_id, "abc")
    assert load_rental(rental_id).connection_info == {"host": "127.0.0.1", "ports": {}}


def test_instance_started_makes_the_rental_active_with_connection_info(provisioned, settings):
    rental_id, node = provisioned()
    before = utcnow()
    actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")

    rental = load_rental(rental_id)
    ports = {a.container_port: a.port for a in live_allocations(rental_id)}
    assert rental.status == RentalStatus.ACTIVE
    assert rental.start_time is not None and rental.start_time >= before
    assert rental.container_id == "c0ffee"
    host = settings.public_proxy_host
    assert rental.connection_info == {
        "host": host,
        "ports": {"22": ports[22], "8080": ports[8080]},
        "ssh": f"ssh -p {ports[22]} root@{host}",
    }


def test_connection_info_has_no_ssh_line_without_port_22(provisioned):
    rental_id, node = provisioned(ports=[8080])
    actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")
    assert "ssh" not in load_rental(rental_id).connection_info


def test_a_redelivered_instance_started_changes_nothing(active):
    rental_id, node = active()
    first = load_rental(rental_id)
    actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")
    again = load_rental(rental_id)
    assert again.start_time == first.start_time
    assert again.status == RentalStatus.ACTIVE
    assert [c["event"] for c in commands(node.id)] == ["start_instance"]


def test_instance_started_from_another_node_is_ignored(provisioned):
    rental_id, _node = provisioned()
    actors.on_instance_started.fn(str(uuid.uuid4()), rental_id, "c0ffee")
    assert load_rental(rental_id).status == RentalStatus.PENDING


def test_an_instance_that_failed_to_start_cancels_the_rental_and_frees_the_node(provisioned):
    rental_id, node = provisioned()
    actors.on_instance_failed.fn(str(node.id), rental_id, "image not found")

    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.CANCELLED
    assert rental.failure_reason == "the instance failed to start: image not found"
    assert live_allocations() == []
    assert load_node(node.id).status == NodeStatus.ONLINE
    actors.on_instance_failed.fn(str(node.id), rental_id, "again")  # redelivered: no change
    assert load_rental(rental_id).failure_reason == rental.failure_reason


def test_an_instance_started_after_the_rental_was_cancelled_is_told_to_stop(provisioned):
    rental_id, node = provisioned()
    actors.on_instance_failed.fn(str(node.id), rental_id, "slow pull")
    actors.on_instance_started.fn(str(node.id), rental_id, "late-container")

    assert load_rental(rental_id).status == RentalStatus.CANCELLED
    stop = commands(node.id)[-1]
    assert stop["event"] == "stop_instance"
    assert stop["data"] == {"rental_id": rental_id, "container_id": "late-container"}


def test_a_rental_not_started_in_time_is_cancelled(provisioned, settings):
    rental_id, node = provisioned()
    actors.check_start_timeout.fn(rental_id)  # not due yet
    assert load_rental(rental_id).status == RentalStatus.PENDING

    backdate_rental(rental_id, settings.rental_start_timeout_seconds + 1)
    actors.check_start_timeout.fn(rental_id)
    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.CANCELLED
    assert rental.failure_reason == (
        f"the node did not start the instance within {settings.rental_start_timeout_seconds} s"
    )
    assert live_allocations() == []
    assert load_node(node.id).status == NodeStatus.ONLINE
    assert commands(node.id)[-1]["event"] == "stop_instance"


def test_the_start_check_leaves_an_active_rental_alone(active, settings):
    rental_id, _node = active()
    backdate_rental(rental_id, settings.rental_start_timeout_seconds + 1)
    actors.check_start_timeout.fn(rental_id)
    assert load_rental(rental_id).status == RentalStatus.ACTIVE


def test_the_pending_sweep_sends_the_start_check_for_overdue_rentals(provisioned, settings):
    from app.redis_client import get_redis

    rental_id, _node = provisioned()
    get_redis().delete("dramatiq:rentals.msgs", "dramatiq:rentals")
    backdate_rental(rental_id, settings.rental_start_timeout_seconds + 1)
    actors.expire_pending_rentals.fn()
    queued = [json.loads(m) for m in get_redis().hvals("dramatiq:rentals.msgs")]
    assert [(m["actor_name"], m["kwargs"]) for m in queued] == [
        ("check_start_timeout", {"rental_id": rental_id})
    ]


def test_stopping_an_active_rental_sends_stop_instance_and_completes_on_instance_stopped(
    client, renter, active
):
    rental_id, node = active()
    response = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    assert response.status_code == 202
    assert response.json["rental"]["status"] == "active"
    assert response.json["rental"]["stop_requested_at"] is not None

    actors.stop_rental.fn(rental_id, None)
    stop = commands(node.id)[-1]
    assert stop == {**stop, "event": "stop_instance"}
    assert stop["data"]["rental_id"] == rental_id
    assert stop["data"]["container_id"] == "c0ffee"
    assert load_rental(rental_id).status == RentalStatus.ACTIVE  # until the agent confirms

    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 137)
    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.COMPLETED
    assert rental.end_time is not None and rental.end_time >= rental.start_time
    assert rental.failure_reason is None
    assert rental.exit_code == 137
    assert live_allocations() == []
    assert {a.released_at is not None for a in all_allocations(rental_id)} == {True}
    assert load_node(node.id).status == NodeStatus.ONLINE


def test_a_redelivered_instance_stopped_changes_nothing(active):
    rental_id, node = active()
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 0)
    ended = load_rental(rental_id)
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 1)
    again = load_rental(rental_id)
    assert (again.status, again.end_time, again.exit_code) == (
        RentalStatus.COMPLETED,
        ended.end_time,
        0,
    )


def test_a_container_that_exits_by_itself_completes_the_rental_with_its_exit_code(active):
    rental_id, node = active()
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 3)
    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.COMPLETED
    assert rental.exit_code == 3
    assert rental.failure_reason == "the container exited by itself with code 3"
    assert load_node(node.id).status == NodeStatus.ONLINE


def test_stopping_a_pending_rental_cancels_it(client, renter, provisioned):
    rental_id, node = provisioned()
    response = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    assert response.status_code == 202
    actors.stop_rental.fn(rental_id, None)

    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.CANCELLED
    assert rental.failure_reason == "stopped before it started"
    assert live_allocations() == []
    assert load_node(node.id).status == NodeStatus.ONLINE
    assert commands(node.id)[-1]["event"] == "stop_instance"


def test_a_rental_stopped_before_provisioning_never_reserves_the_node(client, renter, rent):
    rental_id, node = rent()
    client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    actors.provision_rental.fn(rental_id)  # arrives after the stop
    assert load_rental(rental_id).status == RentalStatus.CANCELLED
    assert all_allocations(rental_id) == []
    assert load_node(node.id).status == NodeStatus.ONLINE
    assert commands(node.id) == []


def test_stop_rental_with_a_reason_keeps_it_on_the_completed_rental(active):
    rental_id, node = active()
    actors.stop_rental.fn(rental_id, "insufficient balance")
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 137)
    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.COMPLETED
    assert rental.failure_reason == "insufficient balance"


def test_stopping_twice_is_accepted_and_changes_nothing(client, renter, active):
    rental_id, node = active()
    first = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    again = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    assert first.status_code == again.status_code == 202
    assert first.json["rental"]["stop_requested_at"] == again.json["rental"]["stop_requested_at"]
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 0)
    done = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    assert done.status_code == 202
    assert done.json["rental"]["status"] == "completed"


def test_stopping_someone_elses_rental_is_404(client, other_user, active):
    rental_id, _node = active()
    response = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=other_user.headers)
    assert response.status_code == 404
    assert load_rental(rental_id).stop_requested_at is None


def test_an_admin_can_stop_any_rental(client, admin, active):
    rental_id, _node = active()
    response = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=admin.headers)
    assert response.status_code == 202
    assert load_rental(rental_id).stop_reason == "stopped by an administrator"


def test_an_active_rental_on_a_node_offline_past_the_grace_period_ends(active, settings):
    rental_id, node = active()
    set_node_status(node.id, NodeStatus.OFFLINE)
    actors.end_rentals_on_offline_nodes.fn()
    actors.end_rental_on_offline_node.fn(rental_id)
    assert load_rental(rental_id).status == RentalStatus.ACTIVE  # still within the grace

    backdate_node_status(node.id, settings.rental_offline_grace_seconds + 1)
    actors.end_rental_on_offline_node.fn(rental_id)
    rental = load_rental(rental_id)
    assert rental.status == RentalStatus.COMPLETED
    assert rental.failure_reason == "node offline"
    # The container and its tunnel may still run: the ports stay out of the pool.
    quarantined = live_allocations(rental_id)
    assert len(quarantined) == 2 and all(a.quarantined_until for a in quarantined)
    assert load_node(node.id).status == NodeStatus.OFFLINE
    assert load_node(node.id).needs_reconcile is True
    assert commands(node.id)[-1]["event"] == "stop_instance"


def test_the_offline_sweep_picks_only_rentals_past_the_grace(active, settings):
    from app.redis_client import get_redis

    late, late_node = active()
    _recent, recent_node = active()
    for node in (late_node, recent_node):
        set_node_status(node.id, NodeStatus.OFFLINE)
    backdate_node_status(late_node.id, settings.rental_offline_grace_seconds + 1)
    get_redis().delete("dramatiq:rentals.msgs", "dramatiq:rentals")
    actors.end_rentals_on_offline_nodes.fn()
    queued = [json.loads(m) for m in get_redis().hvals("dramatiq:rentals.msgs")]
    assert [(m["actor_name"], m["kwargs"]) for m in queued] == [
        ("end_rental_on_offline_node", {"rental_id": late})
    ]


def test_the_rental_state_table_refuses_impossible_transitions(active):
    rental_id, _node = active()
    with session_scope() as session:
        rental = session.get(Rental, uuid.UUID(rental_id), with_for_update=True)
        with pytest.raises(InvalidTransition):
            transition_rental(session, rental, RentalStatus.PENDING)
        with pytest.raises(InvalidTransition):
            transition_rental(session, rental, RentalStatus.CANCELLED)
        assert transition_rental(session, rental, RentalStatus.ACTIVE) is False
        assert transition_rental(session, rental, RentalStatus.COMPLETED, reason="x") is True
        with pytest.raises(InvalidTransition):
            transition_rental(session, rental, RentalStatus.ACTIVE)


def test_actors_ignore_ids_that_are_not_rentals(provisioned):
    from app.redis_client import get_redis

    rental_id, node = provisioned()  # a real rental beside the unknown ids: it must not move
    before = load_rental(rental_id)
    node_before = load_node(node.id)
    commands_before = commands(node.id)
    redis = get_redis()
    redis.delete("dramatiq:rentals.msgs", "dramatiq:rentals", "dramatiq:rentals.DQ.msgs")
    for call in (
        lambda: actors.provision_rental.fn(str(uuid.uuid4())),
        lambda: actors.provision_rental.fn("not-a-uuid"),
        lambda: actors.stop_rental.fn(str(uuid.uuid4()), None),
        lambda: actors.check_start_timeout.fn(str(uuid.uuid4())),
        lambda: actors.on_instance_stopped.fn(str(node.id), str(uuid.uuid4()), None, None),
        lambda: actors.on_instance_started.fn(str(node.id), "not-a-uuid", "c0ffee"),
    ):
        assert call() is None
    after = load_rental(rental_id)
    assert (after.status, after.stop_requested_at, after.container_id) == (
        before.status,
        before.stop_requested_at,
        before.container_id,
    )
    assert load_node(node.id).status == node_before.status
    assert commands(node.id) == commands_before, "no command was sent to the agent"
    assert redis.hlen("dramatiq:rentals.msgs") == 0, "no message was sent"
    assert redis.hlen("dramatiq:rentals.DQ.msgs") == 0, "no start check was scheduled"


def test_live_rentals_for_node_lists_pending_and_active_only(active, rent):
    from app.rentals.service import live_rentals_for_node

    rental_id, node = active()
    with session_scope() as session:
        assert [str(r.id) for r in live_rentals_for_node(session, node.id)] == [rental_id]
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 0)
    with session_scope() as session:
        assert live_rentals_for_node(session, str(node.id)) == []


def test_completing_a_rental_settles_its_bill_in_the_same_transaction(client, renter, active):
    from decimal import Decimal

    rental_id, node = active()
    with session_scope() as session:
        rental = session.get(Rental, uuid.UUID(rental_id), with_for_update=True)
        rental.start_time = utcnow() - timedelta(minutes=10, seconds=30)
    actors.stop_rental.fn(rental_id, None)
    actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 0)

    rental = load_rental(rental_id)
    # Billing is per second of active time (it was per started minute): the clock stopped when
    # the stop was asked for, so the rental pays its whole active seconds at 1.2000 per hour.
    seconds = int((rental.stop_requested_at - rental.start_time).total_seconds())
    assert 630 <= seconds <= 632
    due = Decimal("1.2") * seconds / 3600
    assert rental.billed_amount == due.quantize(Decimal("0.0001"))  # 0.2100 for 630 seconds
    balance = client.get("/api/v1/me", headers=renter.headers).json["balance"]
    assert Decimal(balance) == Decimal("100") - rental.billed_amount
