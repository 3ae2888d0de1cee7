"""Property: after 1,000 random earnings (billing ticks, top-ups) and payout steps (request,
approve, reject, in any order, over any amount), every ledger invariant holds to 0.0000, the
pending account holds exactly the requested payouts, and a request succeeds exactly when it is
within what was available."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from app.auth.models import User
from app.billing import payouts, service
from app.billing.models import PAYOUTS_PAID_CLERK_ID, PAYOUTS_PENDING_CLERK_ID
from app.db import session_scope, utcnow
from app.errors import Conflict
from tests.billing.factory import make_account, make_party

D = Decimal
STEPS = 1000


def _balance(clerk_or_id) -> Decimal:
    with session_scope() as session:
        column = User.clerk_id if isinstance(clerk_or_id, str) else User.id
        value = session.execute(select(User.balance).where(column == clerk_or_id)).scalar()
    return D(0) if value is None else value


@hsettings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False), hold_days=st.sampled_from([0, 1, 7]))
def test_random_earnings_and_payouts_keep_every_invariant(
    app, settings, invariants, rng: random.Random, hold_days: int
):
    config = replace(settings, payout_hold_days=hold_days)
    sparse = replace(settings, billing_tick_seconds=20 * 60)
    start = (utcnow() - timedelta(days=2)).replace(microsecond=0)
    with session_scope() as session:
        renter = make_account(session, balance="100000")
        host_a = make_account(session)
        host_b = make_account(session)
        # Host A also rents (from host B): its balance falls every second while it asks for
        # payouts; the rest is ordinary renting on A's and B's nodes.
        make_party(session, renter=renter, host=host_a, price="7.3333", start=start)
        make_party(session, renter=renter, host=host_a, price="0.0007", start=start)
        make_party(session, renter=renter, host=host_b, price="12.5", start=start)
        make_party(session, renter=host_a, host=host_b, price="3.1", start=start)
        hosts = [host_a.id, host_b.id]
        admin_id = renter.id  # who decides does not matter to the ledger
    pending_before = _balance(PAYOUTS_PENDING_CLERK_ID)
    paid_before = _balance(PAYOUTS_PAID_CLERK_ID)
    clock = start
    days_later = 0  # how far past the real time the payouts are asked for (the hold passing)
    requested: dict = {}  # payout id -> amount, still waiting for a decision
    paid = D(0)
    granted = refused = 0
    for step in range(STEPS):
        op = rng.choices(
            ["tick", "top_up", "request", "approve", "reject", "wait"],
            weights=[30, 5, 35, 12, 12, 6],
        )[0]
        if op == "tick" and clock < utcnow() - timedelta(minutes=30):
            clock += timedelta(minutes=rng.randint(1, 20))
            with session_scope() as session:
                # Ticks here are minutes apart: widen the posting window so that every hour
                # mark is posted (earnings reach the hosts' balances) as with ticks each minute.
                service.bill_active_rentals(session, now=clock, settings=sparse)
        elif op == "top_up":
            with session_scope() as session:
                service.top_up(
                    session,
                    user_id=rng.choice(hosts),
                    amount=D(rng.randint(1, 50000)) / 10000,
                    reference=f"prop-{uuid.uuid4()}",
                )
        elif op == "wait":
            days_later += rng.randint(1, 3)
        elif op == "request":
            host_id = rng.choice(hosts)
            now = utcnow() + timedelta(days=days_later)
            with session_scope() as session:
                user = session.get_one(User, host_id)
                available = payouts.available_for_payout(
                    session, user=user, settings=config, now=now
                )
            amount = rng.choice(
                [
                    available,
                    available + D("0.0001"),
                    (available * D(rng.random())).quantize(D("0.0001")),
                    D(rng.randint(1, 100000)) / 10000,
                ]
            )
            if amount <= 0:
                continue
            try:
                with session_scope() as session:
                    payout = payouts.request_payout(
                        session, user_id=host_id, amount=amount, settings=config, now=now
                    )
                    requested[payout.id] = payout.amount
                granted += 1
                assert amount <= available, (amount, available)
            except Conflict:
                refused += 1
                assert amount > available, (amount, available)
        elif op in ("approve", "reject") and requested:
            payout_id = rng.choice(sorted(requested))
            with session_scope() as session:
                admin = session.get_one(User, admin_id)
                if op == "approve":
                    payouts.approve_payout(session, payout_id=payout_id, admin=admin)
                    paid += requested[payout_id]
                else:
                    payouts.reject_payout(
                        session, payout_id=payout_id, admin=admin, reason="property test"
                    )
            del requested[payout_id]
        if step % 250 == 249:
            report = invariants()
            assert report["ok"], report["differences"]
    report = invariants()
    assert report["ok"], report["differences"]
    assert report["differences"] == []
    assert _balance(PAYOUTS_PENDING_CLERK_ID) - pending_before == sum(requested.values(), D(0))
    assert _balance(PAYOUTS_PAID_CLERK_ID) - paid_before == paid
    assert all(_balance(host_id) >= 0 for host_id in hosts)
    assert granted >= len(requested)  # every waiting payout was granted by this run
