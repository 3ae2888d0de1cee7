"""The worker side of webhooks: claim a due delivery, make one attempt, record what happened.

An attempt runs outside any transaction (it may take WEBHOOK_TIMEOUT_SECONDS): the claim commits
first and moves `next_attempt_at` one lease ahead, so a worker that dies mid-attempt leaves a
delivery that falls due again by itself and the sweeper sends it again. Functions never commit.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.webhooks import transport, urls
from app.webhooks.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from app.webhooks.signing import HEADER, sign

LEASE_MARGIN_SECONDS = 5.0
STATS_KEY = "dc:webhooks:delivery_results"  # hash: attempt result -> count
RESULTS = ("delivered", "http_error", "timeout", "connection_error", "blocked")
RETENTION = timedelta(days=30)
SWEEP_BATCH = 500
PENDING, DELIVERED, FAILED = (s.value for s in DeliveryStatus)


@dataclass(frozen=True)
class Claim:
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    url: str
    secret: str
    body: bytes
    attempt: int


def lease(settings: Settings) -> timedelta:
    """How long a claimed attempt keeps its delivery from being claimed again."""
    return timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)


def backoff_seconds(
    attempts: int, settings: Settings, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempts-1), capped."""
    ceiling = min(
        float(settings.webhook_retry_max_seconds),
        settings.webhook_retry_base_seconds * 2 ** min(max(attempts - 1, 0), 30),
    )
    return ceiling / 2 + rand() * ceiling / 2


def event_body(event: WebhookEvent) -> bytes:
    """The exact bytes POSTed (and signed): the same for every attempt of the event."""
    created = event.created_at.isoformat().replace("+00:00", "Z")
    document = {"id": str(event.id), "type": event.type, "created_at": created, "data": event.data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def claim(session: Session, *, delivery_id: str, now: datetime, settings: Settings) -> Claim | None:
    """Take a due delivery for one attempt; None when it is not due, done, or taken."""
    try:
        key = uuid.UUID(delivery_id)
    except ValueError:
        return None
    delivery = session.execute(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == key, WebhookDelivery.status == PENDING)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if delivery is None:
        return None
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return None  # a retry not yet due, or an attempt in progress elsewhere
    subscription = session.get(WebhookSubscription, delivery.subscription_id)
    if subscription is None:
        return None
    if subscription.disabled_at is not None:
        _fail(delivery, "the subscription is disabled")
        return None
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.next_attempt_at = now + lease(settings)
    event = delivery.event
    return Claim(
        delivery_id=delivery.id,
        event_id=event.id,
        event_type=event.type,
        url=subscription.url,
        secret=subscription.secret,
        body=event_body(event),
        attempt=delivery.attempts,
    )


def attempt(claimed: Claim, settings: Settings) -> transport.Attempt:
    """Check the URL again (its name may point elsewhere now), then POST the signed body."""
    try:
        target = urls.check(
            claimed.url,
            require_https=settings.is_production,
            allow_loopback=settings.webhook_allow_loopback,
        )
    except urls.UnsafeUrl as exc:
        return transport.Attempt("blocked", error=str(exc)[:500])
    headers = {
        HEADER: sign(claimed.secret, claimed.body),
        "DC-Event-Id": str(claimed.event_id),
        "DC-Event-Type": claimed.event_type,
        "DC-Delivery-Attempt": str(claimed.attempt),
    }
    return transport.post(target, claimed.body, headers, timeout=settings.webhook_timeout_seconds)


def record(
    session: Session,
    *,
    delivery_id: uuid.UUID,
    outcome: transport.Attempt,
    now: datetime,
    settings: Settings,
) -> float | None:
    """Write the attempt's outcome; return the seconds until the next attempt, if any."""
    subscription_id = session.execute(
        select(WebhookDelivery.subscription_id).where(WebhookDelivery.id == delivery_id)
    ).scalar_one_or_none()
    if subscription_id is None:
        return None
    # Subscription first, then delivery: disabling a subscription updates all its deliveries.
    subscription = session.get(WebhookSubscription, subscription_id, with_for_update=True)
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if subscription is None or delivery is None or delivery.status != PENDING:
        return None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error[:500] if outcome.error else None
    delivery.last_response = outcome.response[:1024] if outcome.response else None
    if outcome.ok:
        delivery.status = DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        subscription.failing_since = None
        return None
    window = timedelta(seconds=settings.webhook_retry_window_seconds)
    if subscription.failing_since is None:
        subscription.failing_since = now
    elif now - subscription.failing_since >= window:
        disable(
            session,
            subscription,
            now=now,
            reason=f"Every delivery failed for {_span(window)} "
            f"(last: {outcome.error or outcome.result}); re-create the subscription to resume.",
        )
        return None
    delay = backoff_seconds(delivery.attempts, settings)
    retry_at = now + timedelta(seconds=delay)
    if retry_at - delivery.event.created_at > window:
        _fail(delivery, f"gave up after {delivery.attempts} attempts over {_span(window)}")
        return None
    delivery.next_attempt_at = retry_at
    delivery.enqueued_at = retry_at  # the actor re-sends itself with this delay
    return delay


def disable(
    session: Session, subscription: WebhookSubscription, *, now: datetime, reason: str
) -> None:
    """Stop sending to a subscription; its pending deliveries fail with the reason."""
    subscription.disabled_at = now
    subscription.disabled_reason = reason[:2000]
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.subscription_id == subscription.id,
            WebhookDelivery.status == PENDING,
        )
        .values(status=FAILED, next_attempt_at=None, last_error="the subscription was disabled")
        .execution_options(synchronize_session=False)
    )


def _fail(delivery: WebhookDelivery, why: str) -> None:
    delivery.status = FAILED
    delivery.next_attempt_at = None
    delivery.last_error = (f"{why}; last: {delivery.last_error}" if delivery.last_error else why)[
        :500
    ]


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds} s"


def due_deliveries(session: Session, *, now: datetime, settings: Settings) -> list[str]:
    """Deliveries due whose message is lost or late (a killed worker, a failed send).

    A delivery is re-sent when it has been due, and last put on the queue, more than a lease ago;
    a duplicate message is harmless (the claim lets one attempt through).
    """
    stale = now - lease(settings)
    rows = (
        session.execute(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.enqueued_at.is_(None), WebhookDelivery.enqueued_at <= stale),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for row in rows:
        row.enqueued_at = now
    return [str(row.id) for row in rows]


def prune(session: Session, *, now: datetime) -> int:
    """Forget events older than RETENTION that have nothing left to deliver."""
    result = session.execute(
        delete(WebhookEvent).where(
            WebhookEvent.created_at < now - RETENTION,
            ~exists().where(
                WebhookDelivery.event_id == WebhookEvent.id, WebhookDelivery.status == PENDING
            ),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- what ops sees
def count_result(client: Any, result: str) -> None:
    client.hincrby(STATS_KEY, result, 1)


def result_counts(client: Any) -> dict[str, int]:
    counts = dict.fromkeys(RESULTS, 0)
    for key, value in client.hgetall(STATS_KEY).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        counts[name] = int(value)
    return counts


def ops_summary(session: Session, *, now: datetime, limit: int = 20) -> dict[str, Any]:
    """The delivery backlog and the receivers that are failing (or were disabled lately)."""
    pending, due, oldest = session.execute(
        select(
            func.count(),
            func.count().filter(WebhookDelivery.next_attempt_at <= now),
            func.min(WebhookDelivery.created_at),
        ).where(WebhookDelivery.status == PENDING)
    ).one()
    backlog = (
        select(func.count())
        .where(
            WebhookDelivery.subscription_id == WebhookSubscription.id,
            WebhookDelivery.status == PENDING,
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(WebhookSubscription, backlog)
        .where(
            or_(
                WebhookSubscription.failing_since.is_not(None),
                WebhookSubscription.disabled_at >= now - timedelta(days=7),
            )
        )
        .order_by(func.coalesce(WebhookSubscription.failing_since, WebhookSubscription.disabled_at))
        .limit(limit)
    ).all()
    failing = [
        {
            "subscription_id": str(sub.id),
            "user_id": str(sub.user_id),
            "receiver": _without_query(sub.url),
            "failing_for_s": round((now - sub.failing_since).total_seconds(), 1)
            if sub.failing_since
            else None,
            "pending": count,
            "disabled_reason": sub.disabled_reason,
        }
        for sub, count in rows
    ]
    return {
        "pending": pending,
        "due": due,
        "oldest_pending_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
        "failing_receivers": failing,
    }


def _without_query(url: str) -> str:
    """Scheme, host and path: a query string may carry the receiver's own token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
