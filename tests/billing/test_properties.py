"""Property: any sequence of ticks, redeliveries, crashes, offline spells and a stop gives the exact
per-second total, the host the total less the fee, a balance exact to the second at every step,
and every invariant to 0.0000."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from app.billing import rules, service
from app.billing.rules import amount_for_seconds, fee_for
from app.db import session_scope
from app.enums import NodeStatus, RentalStatus
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.rentals.models import Rental
from tests.billing.factory import accrual, balance_of, create_party, ledger, posted_balance_of

D = Decimal
prices = st.decimals(min_value=D("0.0001"), max_value=D("99.9999"), places=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(min_value=1, max_value=3 * 3600 * 1000)),
        st.tuples(st.just("redeliver"), st.just(0)),
        st.tuples(st.just("crash"), st.integers(min_value=1, max_value=3 * 3600 * 1000)),
        st.tuples(st.just("offline"), st.integers(min_value=1, max_value=2 * 3600 * 1000)),
    ),
    min_size=1,
    max_size=10,
)


class Crash(Exception):
    """A worker dying before its transaction commits."""


def _set_node(node_id, status: NodeStatus, *, last_seen: datetime, event_at: datetime) -> None:
    with session_scope() as session:
        node = session.get_one(HostNode, node_id, with_for_update=True)
        transition_node(session, node, status, reason="property test")
        node.last_seen_at = last_seen
        session.execute(
            text(
                "UPDATE node_status_events SET at = :at WHERE id = (SELECT max(id) FROM "
                "node_status_events WHERE node_id = :n)"
            ),
            {"at": event_at, "n": node_id},
        )


@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    price=prices,
    plan=steps,
    confirm_ms=st.integers(min_value=0, max_value=120_000),
    stop_ms=st.integers(min_value=0, max_value=3600 * 1000),
)
def test_any_history_bills_the_exact_active_seconds_and_keeps_every_invariant(
    settings, tick, invariants, t0, price, plan, confirm_ms, stop_ms
):
    timeout = timedelta(seconds=settings.heartbeat_timeout_seconds)
    party = create_party(price=price, balance="1000000", start=t0)
    now = t0
    gaps: list[tuple[datetime, datetime]] = []
    for kind, ms in plan:
        step = timedelta(milliseconds=ms)
        if kind == "tick":
            now += step
            tick(now)
        elif kind == "redeliver":
            tick(now)
        elif kind == "crash":
            now += step
            with pytest.raises(Crash), session_scope() as session:
                service.bill_active_rentals(session, now=now, settings=settings)
                raise Crash
        else:
            # The last heartbeat is now; fleet flips the node offline a timeout later, a tick
            # runs during the spell, and the node is back after `step`.
            gone, back = now, now + timeout + step
            _set_node(party.node_id, NodeStatus.OFFLINE, last_seen=gone, event_at=gone + timeout)
            tick(gone + timeout + step / 2)
            _set_node(party.node_id, NodeStatus.BUSY, last_seen=back, event_at=back)
            gaps.append((gone, back))
            now = back
        # Between any two steps, the balance seen is exact to the second, posted or not.
        active = (now - t0) - sum((b - a for a, b in gaps), timedelta())
        seen = balance_of(party.renter_id, now)
        assert seen == D("1000000") - amount_for_seconds(price, int(active.total_seconds()))
    # The renter asks to stop; the agent confirms a little later; a tick may run in between.
    stop = now + timedelta(milliseconds=stop_ms)
    end = stop + timedelta(milliseconds=confirm_ms)
    with session_scope() as session:
        session.get_one(Rental, party.rental_id).stop_requested_at = stop
    tick(stop + (end - stop) / 2)
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id, with_for_update=True)
        rental.status, rental.end_time = RentalStatus.COMPLETED, end
        service.settle_rental(session, rental, end)
        cost = rules.cost_so_far(rental, end + timedelta(hours=1))

    active = (stop - t0) - sum((b - a for a, b in gaps), timedelta())
    total = amount_for_seconds(price, int(active.total_seconds()))
    fee = fee_for(total, settings.platform_fee_percent)
    assert ledger(party.rental_id) == {"usage": total, "earning": total - fee, "fee": fee}
    assert cost == total
    assert balance_of(party.renter_id) == D("1000000") - total
    assert balance_of(party.host_id) == total - fee
    assert posted_balance_of(party.renter_id) == D("1000000") - total
    row = accrual(party.rental_id)
    assert row.billed_amount == total
    report = invariants()
    assert report["ok"], report["differences"][:5]


@hsettings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prices_and_balances=st.lists(
        st.tuples(prices, st.decimals(min_value=D("0"), max_value=D("5"), places=4)),
        min_size=1,
        max_size=4,
    ),
    ticks=st.lists(st.integers(min_value=1, max_value=2 * 3600 * 1000), min_size=1, max_size=6),
    end_ms=st.integers(min_value=0, max_value=4 * 3600 * 1000),
)
def test_renters_running_out_pay_what_they_had_and_every_invariant_holds(
    settings, tick, invariants, t0, prices_and_balances, ticks, end_ms
):
    parties = [create_party(price=p, balance=b, start=t0) for p, b in prices_and_balances]
    for ms in sorted(ticks):
        tick(t0 + timedelta(milliseconds=ms))
    end = t0 + timedelta(milliseconds=max(max(ticks), end_ms))
    with session_scope() as session:
        for party in parties:
            rental = session.get_one(Rental, party.rental_id, with_for_update=True)
            rental.status, rental.end_time = RentalStatus.COMPLETED, end
            service.settle_rental(session, rental, end)
    seconds = int((end - t0).total_seconds())
    for party, (price, balance) in zip(parties, prices_and_balances, strict=True):
        paid = ledger(party.rental_id)["usage"]
        row = accrual(party.rental_id)
        assert paid + row.waived_amount == amount_for_seconds(price, seconds)
        assert paid == min(balance, amount_for_seconds(price, seconds))
        assert balance_of(party.renter_id) == balance - paid >= 0
        fee = fee_for(paid, settings.platform_fee_percent)
        assert ledger(party.rental_id)["fee"] == fee
    report = invariants()
    assert report["ok"], report["differences"][:5]
