"""The outbox: other domains record events here, in the transaction of the change itself.

Each function adds rows to the caller's session and never commits. One delivery row is written
per (event, subscription); the delivery message is sent only after that transaction commits
(:func:`app.db.after_commit`), so a change that rolls back sends nothing. A send lost after the
commit is picked up by the sweeper.

The domains that record events are services (fleet's state, rentals' lifecycle) and may not import
an actor, so the message for `deliver_webhook` (app/webhooks/actors.py, declared with the name and
queue below) is put on the broker by name, as every process that is not the actor's own does.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import dramatiq
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.billing.accrued import balances as billing_balances
from app.config import Settings, get_settings
from app.db import after_commit, utcnow
from app.enums import RentalStatus
from app.money import quantize, to_wire
from app.queue.broker import broker
from app.rentals.models import Rental
from app.webhooks.models import (
    EventType,
    LowBalanceAlert,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

QUEUE = "webhooks"
DELIVER_ACTOR = "deliver_webhook"  # app/webhooks/actors.py: deliver_webhook(delivery_id)


def send_delivery_after_commit(session: Session, delivery_id: uuid.UUID | str) -> None:
    """Queue one attempt at `delivery_id` once `session` commits; nothing if it rolls back."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=QUEUE,
        actor_name=DELIVER_ACTOR,
        args=(),
        kwargs={"delivery_id": str(delivery_id)},
        options={},
    )
    after_commit(session, functools.partial(broker.enqueue, message), name=DELIVER_ACTOR)


def _subscribers(session: Session, user_ids: Iterable[uuid.UUID], type: str) -> list[Any]:
    ids = list(user_ids)
    if not ids:
        return []
    return list(
        session.execute(
            select(WebhookSubscription.id, WebhookSubscription.user_id).where(
                WebhookSubscription.user_id.in_(ids),
                WebhookSubscription.disabled_at.is_(None),
                WebhookSubscription.events.contains([type]),
            )
        ).all()
    )


def record_event(
    session: Session,
    *,
    user_id: uuid.UUID,
    type: str,
    data: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
) -> uuid.UUID | None:
    """Write event `type` for `user_id` and a delivery per subscription that wants it.

    `data` may be a function, called only when someone is subscribed. Returns the event id, or
    None when nobody is subscribed (nothing is written then).
    """
    subscriptions = [row.id for row in _subscribers(session, [user_id], type)]
    if not subscriptions:
        return None
    now = utcnow()
    payload = _bounded(data() if callable(data) else data)
    event = WebhookEvent(id=uuid.uuid4(), user_id=user_id, type=type, data=payload, created_at=now)
    session.add(event)
    session.flush()
    for subscription_id in subscriptions:
        delivery = WebhookDelivery(
            id=uuid.uuid4(),
            event_id=event.id,
            subscription_id=subscription_id,
            next_attempt_at=now,
            enqueued_at=now,
        )
        session.add(delivery)
        send_delivery_after_commit(session, delivery.id)
    session.flush()
    return event.id


def _bounded(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data, or a stub naming the object when it is larger than WEBHOOK_MAX_PAYLOAD_BYTES."""
    plain = json.loads(json.dumps(data, default=str))
    if len(json.dumps(plain, separators=(",", ":"))) <= get_settings().webhook_max_payload_bytes:
        return plain
    return {"id": plain.get("id"), "truncated": True}


# ----------------------------------------------------------------------- low balance
def check_low_balances(session: Session, *, settings: Settings) -> int:
    """balance.low once per crossing for the renters with running rentals who subscribed to it.

    Called by the billing tick (balances: app/billing/accrued.py). A renter is low when it pays
    for less than LOW_BALANCE_MINUTES of the rentals still running; an alert row remembers that
    the event was sent, and is removed (re-arming it) once the balance is above the line again.
    Only subscribers are read, so the cost follows the subscriptions, not the fleet. Returns how
    many events were recorded.
    """
    rows = session.execute(
        select(Rental.renter_id, func.sum(Rental.cost_per_hour))
        .where(
            Rental.status == RentalStatus.ACTIVE,
            Rental.stop_requested_at.is_(None),
            Rental.renter_id.in_(
                select(WebhookSubscription.user_id).where(
                    WebhookSubscription.disabled_at.is_(None),
                    WebhookSubscription.events.contains([EventType.BALANCE_LOW]),
                )
            ),
        )
        .group_by(Rental.renter_id)
    ).all()
    hourly = {renter_id: cost for renter_id, cost in rows}
    # The balance as every reader sees it: posted, less what the running rentals owe.
    balances = billing_balances(session, hourly)
    watched = set(balances)
    # A renter whose rentals all ended is above any line: re-arm their alert.
    watched |= set(
        session.execute(
            select(LowBalanceAlert.user_id).where(LowBalanceAlert.user_id.not_in(watched))
        ).scalars()
    )
    if not watched:
        return 0
    alerted = set(
        session.execute(
            select(LowBalanceAlert.user_id).where(LowBalanceAlert.user_id.in_(watched))
        ).scalars()
    )
    minutes = settings.low_balance_minutes
    recorded, recovered = 0, []
    for user_id in watched:
        cost = Decimal(hourly.get(user_id) or 0)
        line = quantize(cost * minutes / 60)
        low = cost > 0 and balances[user_id] < line
        if not low:
            if user_id in alerted:
                recovered.append(user_id)
            continue
        if user_id in alerted:
            continue
        inserted = session.execute(
            insert(LowBalanceAlert)
            .values(user_id=user_id)
            .on_conflict_do_nothing()
            .returning(LowBalanceAlert.user_id)
        ).scalar_one_or_none()
        if inserted is None:
            continue
        data = {
            "user_id": str(user_id),
            "balance": to_wire(balances[user_id]),
            "hourly_cost": to_wire(quantize(cost)),
            "minutes_left": int(balances[user_id] * 60 / cost) if cost > 0 else None,
            "threshold_minutes": minutes,
        }
        if record_event(session, user_id=user_id, type=EventType.BALANCE_LOW, data=data):
            recorded += 1
    if recovered:
        session.execute(delete(LowBalanceAlert).where(LowBalanceAlert.user_id.in_(recovered)))
    return recorded
