"""A real worker killed with SIGKILL in the middle of a tick: redelivery leaves exact totals."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select

from app.billing.actors import LAST_TICK_KEY, PAUSE_ENV, PAUSED_KEY
from app.billing.models import BillingCharge
from app.billing.rules import amount_for_minutes
from app.db import session_scope
from app.redis_client import get_redis
from tests.billing.factory import charge_count, create_party, ledger
from tests.procs import running, wait_until, worker_process


def test_a_worker_killed_mid_tick_leaves_nothing_and_redelivery_bills_each_minute_once(
    t0, invariants
):
    from app.billing.actors import bill_active_rentals

    redis = get_redis()
    parties = [
        create_party(price=f"{1 + i / 7:.4f}", balance="10000", start=t0 - timedelta(seconds=i))
        for i in range(40)
    ]

    doomed = worker_process({PAUSE_ENV: "60"}, name="billing-doomed")
    with running(doomed):
        bill_active_rentals.send()
        wait_until(
            lambda: redis.get(PAUSED_KEY),
            timeout=60,
            what=f"the tick to be in flight\n{doomed.tail()}",
        )
        # The tick has written every charge in its transaction and not committed yet.
        assert charge_count() == 0
        doomed.kill()
    assert charge_count() == 0
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
        charges = {c.rental_id: c for c in session.execute(select(BillingCharge)).scalars()}
    assert len(charges) == len(parties)
    for party in parties:
        charge = charges[party.rental_id]
        minutes = math.ceil((charge.billed_until - party.start).total_seconds() / 60)
        assert (charge.from_minute, charge.to_minute) == (0, minutes)
        assert ledger(party.rental_id)["usage"] == amount_for_minutes(party.cost_per_hour, minutes)
    report = invariants()
    assert report["ok"], report["differences"]
