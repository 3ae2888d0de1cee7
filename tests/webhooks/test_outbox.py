"""The outbox and the retry schedule, with the actors called directly on the real database."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from app.billing import actors as billing_actors
from app.db import session_scope, utcnow
from app.enums import NodeStatus
from app.rentals import actors as rental_actors
from app.rentals.models import Rental
from app.webhooks import delivery
from app.webhooks.actors import deliver_webhook
from app.webhooks.models import WebhookDelivery, WebhookEvent
from app.webhooks.signing import sign
from tests.fixtures import set_balance
from tests.rentals.helpers import rental_body, set_node_status
from tests.webhooks.conftest import set_settings
from tests.webhooks.receiver import Receiver, verify_signature


def _events(type: str) -> list[WebhookEvent]:
    with session_scope() as session:
        rows = list(
            session.execute(select(WebhookEvent).where(WebhookEvent.type == type)).scalars()
        )
        for row in rows:
            session.expunge(row)
        return rows


def _delivery_ids() -> list[str]:
    with session_scope() as session:
        return [str(i) for i in session.execute(select(WebhookDelivery.id)).scalars()]


def test_the_signature_fails_with_a_wrong_secret_an_old_timestamp_or_a_changed_body():
    body = b'{"id":"1"}'
    header = sign("whsec_right", body)

    assert verify_signature("whsec_right", header, body)
    assert not verify_signature("whsec_wrong", header, body)
    assert not verify_signature("whsec_right", header, body + b" ")
    old = sign("whsec_right", body, timestamp=int(time.time()) - 3600)
    assert not verify_signature("whsec_right", old, body)


def test_backoff_grows_exponentially_with_jitter_and_stays_under_the_cap(settings):
    fast = dataclasses.replace(
        settings, webhook_retry_base_seconds=10, webhook_retry_max_seconds=3600
    )

    lows = [delivery.backoff_seconds(n, fast, rand=lambda: 0.0) for n in range(1, 12)]
    highs = [delivery.backoff_seconds(n, fast, rand=lambda: 1.0) for n in range(1, 12)]

    assert lows[:4] == [5.0, 10.0, 20.0, 40.0]
    assert highs[:4] == [10.0, 20.0, 40.0, 80.0]
    assert max(highs) == 3600.0


def test_only_subscribed_event_types_are_written_and_each_subscription_gets_a_delivery(
    client, make_user, register_node
):
    host = make_user("user_host2")
    for events in (["node.online"], ["node.online", "node.offline"], ["rental.active"]):
        response = client.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/h", "events": events},
            headers=host.headers,
        )
        assert response.status_code == 201
    node = register_node(host)

    set_node_status(node.id, NodeStatus.ONLINE)
    set_node_status(node.id, NodeStatus.MAINTENANCE)  # neither offline nor back: no event

    assert len(_events("node.online")) == 1
    assert len(_delivery_ids()) == 2
    assert _events("node.offline") == []


def test_a_receiver_failing_for_the_whole_window_gets_its_subscription_disabled_with_a_reason(
    client, host, register_node, settings
):
    with Receiver(statuses=[500] * 10) as receiver:
        sub = client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["node.online"]},
            headers=host.headers,
        ).json
        node = register_node(host)
        set_node_status(node.id, NodeStatus.ONLINE)
        (delivery_id,) = _delivery_ids()
        set_settings(
            dataclasses.replace(
                settings, webhook_retry_window_seconds=1, webhook_retry_base_seconds=0.05
            )
        )
        try:
            deliver_webhook.fn(delivery_id)
            time.sleep(1.1)
            with session_scope() as session:
                session.execute(
                    update(WebhookDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
            deliver_webhook.fn(delivery_id)
        finally:
            set_settings(settings)

    assert [r.status for r in receiver.requests] == [500, 500]
    (listed,) = client.get("/api/v1/webhooks", headers=host.headers).json["items"]
    assert listed["id"] == sub["id"]
    assert listed["active"] is False
    assert "HTTP 500" in listed["disabled_reason"]
    (log,) = client.get(f"/api/v1/webhooks/{sub['id']}/deliveries", headers=host.headers).json[
        "items"
    ]
    assert (log["status"], log["attempts"]) == ("failed", 2)


def test_low_balance_fires_once_per_crossing(client, renter, online_node, settings):
    client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["balance.low"]},
        headers=renter.headers,
    )
    node = online_node()  # 1.2000 per hour
    rental_id = client.post(
        "/api/v1/rentals", json=rental_body(node.id), headers=renter.headers
    ).json["rental"]["id"]
    rental_actors.provision_rental.fn(rental_id)
    rental_actors.on_instance_started.fn(str(node.id), rental_id, "c0ffee")

    def tick_a_minute_later() -> None:
        with session_scope() as session:
            session.execute(
                update(Rental)
                .where(Rental.id == uuid.UUID(rental_id))
                .values(start_time=Rental.start_time - timedelta(seconds=61))
            )
        billing_actors.bill_active_rentals.fn()

    set_balance(renter.id, "0.3000")  # 15 minutes at 1.20 per hour: under the 30-minute line
    tick_a_minute_later()
    tick_a_minute_later()
    assert len(_events("balance.low")) == 1
    (event,) = _events("balance.low")
    assert event.data["threshold_minutes"] == settings.low_balance_minutes
    assert event.data["hourly_cost"] == "1.2000"

    set_balance(renter.id, "50.0000")  # above the line again: the alert re-arms
    tick_a_minute_later()
    assert len(_events("balance.low")) == 1
    set_balance(renter.id, "0.2000")
    tick_a_minute_later()
    assert len(_events("balance.low")) == 2
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(WebhookDelivery)).scalar() == 2
