"""Webhook actors: one message per delivery on the `webhooks` queue, and the periodic sweeper.

Every delivery is its own message, so a slow or dead receiver holds one worker thread for at
most WEBHOOK_TIMEOUT_SECONDS per attempt and never delays other receivers' deliveries. Retries
follow the schedule stored on the delivery row (not Dramatiq's retries): the actor re-sends
itself with the backoff delay once the outcome is committed, and the sweeper re-sends whatever
fell due without a message.

An attempt is two units of work around the HTTP request, never one transaction held open while a
receiver takes its time: the claim commits first (app/webhooks/delivery.py).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import utcnow
from app.queue.actors import actor, unit_of_work
from app.queue.periodic import PeriodicJob, register
from app.redis_client import get_redis
from app.webhooks import delivery, transport
from app.webhooks.events import DELIVER_ACTOR, QUEUE

log = logging.getLogger(__name__)
RETRY_SLACK_MS = 50  # the retry runs just after it falls due, not just before


@actor(queue_name=QUEUE, actor_name=DELIVER_ACTOR, max_retries=0, time_limit=120_000)
def deliver_webhook(delivery_id: str) -> None:
    """Make one attempt at a due delivery and schedule the next one if it failed."""
    settings = get_settings()
    claimed = _claim(delivery_id=delivery_id, settings=settings)
    if claimed is None:
        return
    outcome = delivery.attempt(claimed, settings)
    retry_in = _record(claimed=claimed, outcome=outcome, settings=settings)
    try:
        delivery.count_result(get_redis(), outcome.result)
    except Exception:
        log.warning("webhook result not counted", exc_info=True)
    log.info(
        "webhook attempt",
        extra={
            "delivery_id": delivery_id,
            "event_id": str(claimed.event_id),
            "attempt": claimed.attempt,
            "result": outcome.result,
            "status_code": outcome.status_code,
            "retry_in_s": round(retry_in, 2) if retry_in is not None else None,
        },
    )


@unit_of_work
def _claim(session: Session, delivery_id: str, settings: Settings) -> delivery.Claim | None:
    return delivery.claim(session, delivery_id=delivery_id, now=utcnow(), settings=settings)


@unit_of_work
def _record(
    session: Session, claimed: delivery.Claim, outcome: transport.Attempt, settings: Settings
) -> float | None:
    retry_in = delivery.record(
        session, delivery_id=claimed.delivery_id, outcome=outcome, now=utcnow(), settings=settings
    )
    if retry_in is not None:
        # A lost send is repaired by the sweeper: the schedule lives on the delivery row.
        deliver_webhook.send_after_commit_with_delay(
            session,
            int(retry_in * 1000) + RETRY_SLACK_MS,
            delivery_id=str(claimed.delivery_id),
        )
    return retry_in


@actor(queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sweep_webhook_deliveries() -> None:
    """Periodic: re-send deliveries that fell due without a message, and prune old events."""
    resent = _resend_due(settings=get_settings())
    pruned = _prune()
    if resent or pruned:
        log.info("webhook sweep", extra={"resent": resent, "pruned": pruned})


@unit_of_work
def _resend_due(session: Session, settings: Settings) -> int:
    ids = delivery.due_deliveries(session, now=utcnow(), settings=settings)
    for delivery_id in ids:
        deliver_webhook.send_after_commit(session, delivery_id=delivery_id)
    return len(ids)


@unit_of_work
def _prune(session: Session) -> int:
    return delivery.prune(session, now=utcnow())


PERIODIC_JOBS = register(
    PeriodicJob(sweep_webhook_deliveries, lambda settings: settings.webhook_sweep_seconds),
)
