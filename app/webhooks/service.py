"""Webhook subscriptions and their delivery logs, for the API. Functions never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.config import Settings
from app.errors import Conflict, NotFound, ValidationFailed
from app.pagination import newest_first_page
from app.webhooks import urls
from app.webhooks.models import WebhookDelivery, WebhookEvent, WebhookSubscription
from app.webhooks.signing import new_secret


def check_url(url: str, *, settings: Settings) -> None:
    """422 unless `url` may receive webhooks under these settings."""
    try:
        urls.check(
            url,
            require_https=settings.is_production,
            allow_loopback=settings.webhook_allow_loopback,
        )
    except urls.UnsafeUrl as exc:
        raise ValidationFailed(str(exc), errors={"url": [str(exc)]}) from None


def create_subscription(
    session: Session, *, user: User, url: str, events: list[str], settings: Settings
) -> WebhookSubscription:
    """Subscribe `url` to `events`; the returned row carries the new secret (shown once)."""
    check_url(url, settings=settings)
    # Serialise one user's creations so two at once cannot pass the cap together.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    count = session.execute(
        select(func.count())
        .select_from(WebhookSubscription)
        .where(WebhookSubscription.user_id == user.id)
    ).scalar_one()
    cap = settings.webhook_max_subscriptions
    if count >= cap:
        raise Conflict(
            f"You have {count} webhook subscriptions, the most allowed ({cap}); delete one first."
        )
    subscription = WebhookSubscription(
        id=uuid.uuid4(), user_id=user.id, url=url, events=list(events), secret=new_secret()
    )
    session.add(subscription)
    session.flush()
    session.refresh(subscription)
    return subscription


def get_subscription(
    session: Session, *, user: User, subscription_id: uuid.UUID
) -> WebhookSubscription:
    subscription = session.execute(
        select(WebhookSubscription).where(
            WebhookSubscription.id == subscription_id, WebhookSubscription.user_id == user.id
        )
    ).scalar_one_or_none()
    if subscription is None:
        raise NotFound("No such webhook subscription.")
    return subscription


def list_subscriptions(
    session: Session, *, user: User, limit: int, cursor: str | None
) -> tuple[list[WebhookSubscription], str | None]:
    query = select(WebhookSubscription).where(WebhookSubscription.user_id == user.id)
    return newest_first_page(session, query, WebhookSubscription, limit=limit, cursor=cursor)


def delete_subscription(session: Session, *, user: User, subscription_id: uuid.UUID) -> None:
    """Delete the subscription and its delivery log; pending deliveries are dropped."""
    session.delete(get_subscription(session, user=user, subscription_id=subscription_id))
    session.flush()


def list_deliveries(
    session: Session, *, user: User, subscription_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    get_subscription(session, user=user, subscription_id=subscription_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    rows, next_cursor = newest_first_page(
        session, query, WebhookDelivery, limit=limit, cursor=cursor
    )
    types = dict(
        session.execute(
            select(WebhookEvent.id, WebhookEvent.type).where(
                WebhookEvent.id.in_([row.event_id for row in rows])
            )
        ).all()
    )
    items = [
        {column.key: getattr(row, column.key) for column in WebhookDelivery.__table__.columns}
        | {"type": types.get(row.event_id)}
        for row in rows
    ]
    return items, next_cursor
