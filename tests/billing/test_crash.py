"""A real worker killed with SIGKILL in the middle of a tick and its hourly posting: redelivery
leaves exact totals, each second charged once and each hour posted once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.billing.actors import LAST_TICK_KEY, PAUSE_ENV, PAUSED_KEY
from app.billing.models import RentalAccrual
from app.billing.rules import amount_for_seconds, fee_for
from app.db import session_scope
from app.redis_client import get_redis
from tests.billing.factory import accrual_count, balance_of, create_party, ledger, line_count
from tests.procs import running, wait_until, worker_process


def test_a_worker_killed_mid_tick_and_posting_leaves_nothing_and_redelivery_bills_once(
    t0, tick, settings, invariants
):
    from app.billing.actors import bill_active_rentals

    redis = get_redis()
    parties = [
        create_party(price=f"{1 + i / 7:.4f}", balance="10000", start=t0 - timedelta(seconds=i))
        for i in range(40)
    ]
    # Half an hour billed (in place, nothing posted yet); the rentals started a day ago, so the
    # next tick settles the rest and posts their first hour.
    tick(t0 + timedelta(minutes=30))
    before = {p.renter_id: balance_of(p.renter_id) for p in parties}
    assert accrual_count() == len(parties) and line_count() == 0

    doomed = worker_process({PAUSE_ENV: "60"}, name="billing-doomed")
    with running(doomed):
        bill_active_rentals.send()
        wait_until(
            lambda: redis.get(PAUSED_KEY),
            timeout=60,
            what=f"the tick to be in flight\n{doomed.tail()}",
        )
        # The tick has updated every running total and written every posting in its
        # transaction, and not committed yet.
        assert line_count() == 0
        doomed.kill()
    assert line_count() == 0
    assert {p.renter_id: balance_of(p.renter_id) for p in parties} == before
    assert not redis.exists(LAST_TICK_KEY)

    # A fresh worker finds the dead worker's unacked message and runs it again.
    heir = worker_process(
        {"DC_BROKER_HEARTBEAT_TIMEOUT_MS": "1500", "DC_BROKER_MAINTENANCE_CHANCE": "1000000"},
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
    for party in parties:
        row = rows[party.rental_id]
        seconds = int((row.billed_until - party.start).total_seconds())
        total = amount_for_seconds(party.cost_per_hour, seconds)
        fee = fee_for(total, settings.platform_fee_percent)
        assert (row.billed_seconds, row.billed_amount) == (seconds, total)
        assert (row.postings, row.posted_amount) == (1, total)  # one posting, all of it
        assert ledger(party.rental_id) == {"usage": total, "earning": total - fee, "fee": fee}
        assert line_count(party.rental_id) == 3
        assert balance_of(party.renter_id) == 10000 - total
    report = invariants()
    assert report["ok"], report["differences"]
