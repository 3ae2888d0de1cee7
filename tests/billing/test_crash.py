"""A real worker killed with SIGKILL in the middle of a tick and its hourly postings: redelivery
leaves exact totals, each second charged once and each hour posted once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from app.billing.actors import LAST_TICK_KEY, PAUSE_ENV, PAUSED_KEY
from app.billing.models import RentalAccrual
from app.billing.rules import amount_for_seconds, fee_for
from app.db import session_scope, utcnow
from app.redis_client import get_redis
from tests.billing.factory import (
    accrual_count,
    create_party,
    ledger,
    line_count,
    posted_balance_of,
)
from tests.procs import running, wait_until, worker_process

# The workers' ticks run at the real time, some seconds after the rentals' hour marks: a tick
# interval of ten minutes makes the posting window twenty, whatever the machine's pace.
SLOW_TICKS = {"BILLING_TICK_SECONDS": "600"}


def _watermark():
    with session_scope() as session:
        return session.execute(text("SELECT ticked_until FROM billing_watermark")).scalar()


def test_a_worker_killed_mid_tick_and_posting_leaves_nothing_and_redelivery_bills_once(
    settings, invariants
):
    from app.billing.actors import bill_active_rentals

    redis = get_redis()
    # Their first hour mark passed half a minute ago (or a little more): the next tick posts it.
    start = utcnow().replace(microsecond=0) - timedelta(hours=1, seconds=30)
    parties = [
        create_party(price=f"{1 + i / 7:.4f}", balance="10000", start=start - timedelta(seconds=i))
        for i in range(40)
    ]
    assert accrual_count() == 0 and line_count() == 0

    doomed = worker_process({PAUSE_ENV: "60", **SLOW_TICKS}, name="billing-doomed")
    with running(doomed):
        bill_active_rentals.send()
        wait_until(
            lambda: redis.get(PAUSED_KEY),
            timeout=60,
            what=f"the tick to be in flight\n{doomed.tail()}",
        )
        # The tick has written every posting in its transaction, and not committed yet.
        assert line_count() == 0
        doomed.kill()
    assert line_count() == 0 and accrual_count() == 0
    assert all(posted_balance_of(p.renter_id) == 10000 for p in parties)
    assert _watermark() is None
    assert not redis.exists(LAST_TICK_KEY)

    # A fresh worker finds the dead worker's unacked message and runs it again.
    heir = worker_process(
        {
            "DC_BROKER_HEARTBEAT_TIMEOUT_MS": "1500",
            "DC_BROKER_MAINTENANCE_CHANCE": "1000000",
            **SLOW_TICKS,
        },
        name="billing-heir",
    )
    with running(heir):
        wait_until(
            lambda: redis.exists(LAST_TICK_KEY),
            timeout=60,
            what=f"the redelivered tick\n{heir.tail()}",
        )

    with session_scope() as session:
        rows = {a.rental_id: a for a in session.execute(select(RentalAccrual)).scalars()}
    assert len(rows) == len(parties)
    assert _watermark() is not None
    for party in parties:
        row = rows[party.rental_id]
        seconds = int((row.billed_until - party.start).total_seconds())
        assert seconds >= 3600
        total = amount_for_seconds(party.cost_per_hour, seconds)
        fee = fee_for(total, settings.platform_fee_percent)
        assert (row.billed_seconds, row.billed_amount, row.postings) == (seconds, total, 1)
        assert row.posted_until == party.start + timedelta(hours=1)
        assert ledger(party.rental_id) == {"usage": total, "earning": total - fee, "fee": fee}
        assert line_count(party.rental_id) == 3
        assert posted_balance_of(party.renter_id) == 10000 - total
    report = invariants()
    assert report["ok"], report["differences"]
