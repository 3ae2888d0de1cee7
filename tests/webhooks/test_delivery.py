"""Deliveries by a real worker process to a real receiver on 127.0.0.1."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.db import session_scope
from app.enums import NodeStatus
from app.rentals import actors as rental_actors
from app.webhooks.models import WebhookDelivery, WebhookEvent
from tests.rentals.helpers import rental_body, set_node_status
from tests.webhooks.conftest import scheduler, wait_for, webhook_worker
from tests.webhooks.receiver import Receiver, verify_signature


def _deliveries(client, user, subscription_id) -> list[dict]:
    response = client.get(f"/api/v1/webhooks/{subscription_id}/deliveries", headers=user.headers)
    assert response.status_code == 200, response.json
    return response.json["items"]


def _all_delivered(client, user, subscription_id, count: int) -> bool:
    log = _deliveries(client, user, subscription_id)
    return len(log) == count and all(d["status"] == "delivered" for d in log)


def _metric(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_a_rentals_life_sends_signed_active_stop_requested_and_completed_events(
    client, renter, online_node, receiver, subscribe
):
    sub = subscribe(
        renter,
        receiver.url,
        ["rental.active", "rental.stop_requested", "rental.completed", "rental.failed"],
    )
    node = online_node()
    created = client.post(
        "/api/v1/rentals", json=rental_body(node.id), headers=renter.headers
    ).json["rental"]
    rental_id = created["id"]
    rental_actors.provision_rental.fn(rental_id)
    rental_actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")
    stop = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=renter.headers)
    assert stop.status_code == 202
    rental_actors.on_instance_stopped.fn(str(node.id), rental_id, "c0ffee", 0)

    with webhook_worker() as worker:
        wait_for(
            lambda: _all_delivered(client, renter, sub["id"], 3),
            what="three deliveries recorded",
            proc=worker,
        )

    bodies = [r.json for r in receiver.answered()]
    assert sorted(b["type"] for b in bodies) == [
        "rental.active",
        "rental.completed",
        "rental.stop_requested",
    ]
    for request in receiver.answered():
        assert verify_signature(sub["secret"], request.signature, request.body)
        assert not verify_signature("whsec_wrong", request.signature, request.body)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["dc-event-id"] == request.json["id"]
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type["rental.active"]) == {"id", "type", "created_at", "data"}
    assert by_type["rental.active"]["data"]["id"] == rental_id
    assert by_type["rental.active"]["data"]["status"] == "active"
    assert "env" not in by_type["rental.active"]["data"]
    completed = by_type["rental.completed"]["data"]
    assert completed["status"] == "completed"
    assert completed["cost"] == completed["cost_so_far"]
    assert len({b["id"] for b in bodies}) == 3
    log = _deliveries(client, renter, sub["id"])
    assert {(d["type"], d["status"], d["attempts"], d["last_status_code"]) for d in log} == {
        ("rental.active", "delivered", 1, 200),
        ("rental.stop_requested", "delivered", 1, 200),
        ("rental.completed", "delivered", 1, 200),
    }


def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt_with_the_same_id(
    client, host, register_node, subscribe, admin
):
    with Receiver(statuses=[500, 500]) as receiver:
        sub = subscribe(host, receiver.url, ["node.offline", "node.online"])
        node = register_node(host)
        set_node_status(node.id, NodeStatus.ONLINE)  # offline -> online: node.online

        with webhook_worker() as worker:
            wait_for(
                lambda: _all_delivered(client, host, sub["id"], 1), what="a delivery", proc=worker
            )

        statuses = [r.status for r in receiver.requests]
        assert statuses == [500, 500, 200]
        ids = {r.json["id"] for r in receiver.requests}
        assert len(ids) == 1
        assert receiver.requests[0].json["type"] == "node.online"
        assert receiver.requests[0].json["data"]["id"] == str(node.id)
        assert all(verify_signature(sub["secret"], r.signature, r.body) for r in receiver.requests)
        assert [r.headers["dc-delivery-attempt"] for r in receiver.requests] == ["1", "2", "3"]
        # Backoff with jitter: at least half of 0.2 s, then half of 0.4 s.
        at = [r.at for r in receiver.requests]
        assert at[1] - at[0] >= 0.1 and at[2] - at[1] >= 0.2

    (delivery,) = _deliveries(client, host, sub["id"])
    assert delivery["event_id"] == receiver.requests[0].json["id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        3,
        200,
    )
    assert delivery["next_attempt_at"] is None
    assert _metric(client, "dc_webhook_deliveries_total", result="http_error") == 2
    assert _metric(client, "dc_webhook_deliveries_total", result="delivered") == 1
    ops = client.get("/ops/queues.json", headers=admin.headers).json["webhooks"]
    assert ops["pending"] == 0 and ops["failing_receivers"] == []


def test_a_worker_killed_mid_delivery_loses_nothing(client, host, register_node, subscribe):
    with Receiver(stall_first=True) as receiver:
        sub = subscribe(host, receiver.url, ["node.online"])
        node = register_node(host)
        set_node_status(node.id, NodeStatus.ONLINE)

        with webhook_worker("webhook-worker-killed") as first:
            wait_for(lambda: receiver.requests, what="the first attempt", proc=first)
            first.kill()  # SIGKILL while the receiver holds the request open
        assert receiver.answered() == []
        (pending,) = _deliveries(client, host, sub["id"])
        assert (pending["status"], pending["attempts"]) == ("pending", 1)

        with webhook_worker("webhook-worker-second") as second, scheduler():
            wait_for(
                lambda: _all_delivered(client, host, sub["id"], 1),
                timeout=60,
                what="redelivery",
                proc=second,
            )

        (stalled, delivered) = receiver.requests
        assert stalled.json["id"] == delivered.json["id"]
        assert verify_signature(sub["secret"], delivered.signature, delivered.body)
    (done,) = _deliveries(client, host, sub["id"])
    assert (done["status"], done["attempts"]) == ("delivered", 2)


def test_delivery_rechecks_the_address_and_blocks_a_url_that_now_resolves_to_a_refused_one(
    client, host, register_node, subscribe, receiver
):
    # Accepted while loopback was allowed; `localhost` is resolved again at delivery time, under
    # settings that refuse loopback, as a name re-pointed at an internal address would be.
    sub = subscribe(host, f"http://localhost:{receiver.port}/hook", ["node.online"])
    node = register_node(host)
    set_node_status(node.id, NodeStatus.ONLINE)

    with webhook_worker(WEBHOOK_ALLOW_LOOPBACK="false") as worker:
        wait_for(
            lambda: _metric(client, "dc_webhook_deliveries_total", result="blocked") >= 2,
            what="two blocked attempts",
            proc=worker,
        )

    assert receiver.requests == []
    delivery = _deliveries(client, host, sub["id"])[0]
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] is None
    assert "loopback" in delivery["last_error"]
    assert delivery["attempts"] >= 2


def test_events_are_never_sent_for_a_state_change_whose_transaction_rolled_back(
    client, host, register_node, subscribe, receiver
):
    from app.fleet.models import HostNode
    from app.fleet.state import transition_node

    sub = subscribe(host, receiver.url, ["node.online", "node.offline"])
    node = register_node(host)

    with session_scope() as session:  # raises after the change: the transaction rolls back
        try:
            with session.begin_nested():
                row = session.get(HostNode, node.id, with_for_update=True)
                transition_node(session, row, NodeStatus.ONLINE, reason="rolled back")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    try:
        with session_scope() as session:
            row = session.get(HostNode, node.id, with_for_update=True)
            transition_node(session, row, NodeStatus.MAINTENANCE, reason="rolled back too")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(WebhookEvent)).scalar() == 0
        assert session.execute(select(func.count()).select_from(WebhookDelivery)).scalar() == 0

    set_node_status(node.id, NodeStatus.ONLINE)  # committed: this one is sent
    with webhook_worker() as worker, scheduler():
        wait_for(
            lambda: _all_delivered(client, host, sub["id"], 1),
            what="the committed event",
            proc=worker,
        )
        import time

        time.sleep(3)  # a few sweeps: nothing else turns up

    with session_scope() as session:
        (event_id,) = session.execute(select(WebhookEvent.id)).scalars().all()
    assert [r.json["id"] for r in receiver.requests] == [str(event_id)]
    assert uuid.UUID(receiver.requests[0].json["id"]) == event_id
