"""Billing actors: the periodic tick that posts the rentals whose hour has passed (or whose renter
ran out) to the ledger and stops the rentals their renters can no longer pay for."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.billing import service
from app.config import get_settings
from app.db import utcnow
from app.queue.actors import actor, unit_of_work
from app.queue.periodic import PeriodicJob, register
from app.redis_client import get_redis
from app.rentals.actors import stop_rental
from app.webhooks.events import check_low_balances

log = logging.getLogger(__name__)
LAST_TICK_KEY = "dc:billing:last_tick"
# Test hook (honoured only with APP_ENV=test): seconds the tick waits inside its transaction,
# after its postings and before commit, so a test can kill the worker in the middle of a
# tick.
PAUSE_ENV = "DC_TEST_BILLING_PAUSE_SECONDS"
PAUSED_KEY = "dc:billing:test_paused"


@actor(
    queue_name="billing", max_retries=5, min_backoff=1_000, max_backoff=30_000, time_limit=300_000
)
def bill_active_rentals() -> None:
    """Post the rentals that are due and stop those their renters cannot pay for any more."""
    started = time.monotonic()
    now = utcnow()
    run = _bill(now)
    summary: dict[Any, Any] = {
        "rentals": run.looked,
        "priced": run.priced,
        "charged": run.charged,
        "amount": str(run.total),
        "postings": run.postings,
        "rows_written": run.rows_written,
        "stopped": len(run.to_stop),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    get_redis().hset(LAST_TICK_KEY, mapping={"at": f"{now.timestamp():.3f}", **summary})
    log.info("billing tick", extra=summary)


@unit_of_work
def _bill(session: Session, now: datetime) -> service.BillingRun:
    settings = get_settings()
    run = service.bill_active_rentals(session, now=now, settings=settings)
    check_low_balances(session, settings=settings)
    for rental_id in run.to_stop:
        stop_rental.send_after_commit(
            session, rental_id=str(rental_id), reason=service.INSUFFICIENT_BALANCE
        )
    _test_pause(settings.app_env)
    return run


def _test_pause(app_env: str) -> None:
    seconds = float(os.environ.get(PAUSE_ENV) or 0)
    if seconds > 0 and app_env == "test":
        get_redis().set(PAUSED_KEY, str(os.getpid()), ex=60)
        time.sleep(seconds)


PERIODIC_JOBS = register(
    PeriodicJob(bill_active_rentals, lambda settings: settings.billing_tick_seconds),
)
