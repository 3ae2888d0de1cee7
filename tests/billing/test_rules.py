"""The pure billing rules: cumulative rounding per second, the fee split, credit minutes, cost so
far."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from app.billing import service
from app.billing.rules import (
    amount_for_minutes,
    amount_for_seconds,
    cost_so_far,
    credit_minutes_left,
    split_fee,
)
from app.db import session_scope
from app.enums import RentalStatus
from app.money import quantize
from app.rentals.models import Rental
from tests.billing.factory import accrual, balance_of, cost_at, create_party

D = Decimal
prices = st.decimals(min_value=D("0.0001"), max_value=D("999.9999"), places=4)


@given(price=prices, cuts=st.lists(st.integers(min_value=1, max_value=10_000_000), max_size=40))
def test_any_split_of_the_same_seconds_charges_the_amount_of_the_whole(price, cuts):
    points = [0, *sorted(set(cuts))]
    total = sum(
        amount_for_seconds(price, b) - amount_for_seconds(price, a)
        for a, b in itertools.pairwise(points)
    )
    assert total == amount_for_seconds(price, points[-1])
    assert amount_for_seconds(price, points[-1]) == quantize(price * points[-1] / 3600)


@given(
    amount=st.decimals(min_value=D("0"), max_value=D("100000"), places=4),
    percent=st.decimals(min_value=D("0"), max_value=D("99.99"), places=2),
)
def test_the_fee_is_rounded_once_and_the_host_gets_the_exact_rest(amount, percent):
    host, fee = split_fee(amount, percent)
    assert host + fee == amount
    assert fee == quantize(amount * percent / 100)
    assert host >= 0 and fee >= 0


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(price=prices, seconds=st.integers(min_value=0, max_value=600_000_000))
def test_the_database_rounds_like_the_one_python_rule(app, price, seconds):
    with session_scope() as session:
        in_sql = session.execute(
            text("SELECT ROUND(CAST(:p AS numeric) * :s / 3600, 4)"), {"p": price, "s": seconds}
        ).scalar_one()
    assert in_sql == amount_for_seconds(price, seconds)


@hsettings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    price=prices,
    ticks=st.lists(st.integers(min_value=1, max_value=6 * 3600 * 1000), min_size=1, max_size=12),
)
def test_ticks_at_any_moments_bill_exactly_the_whole_seconds(tick, t0, price, ticks):
    party = create_party(price=price, balance="1000000", start=t0)
    for ms in sorted(ticks):
        at = t0 + timedelta(milliseconds=ms)
        tick(at)
        assert cost_at(party, at) == amount_for_seconds(price, ms // 1000)
        row = accrual(party.rental_id)
        if row is not None:  # posted at an hour mark: exact up to that tick's second
            assert row.billed_amount == amount_for_seconds(price, row.billed_seconds)
            assert row.billed_seconds <= ms // 1000
    seconds = max(ticks) // 1000
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        rental.status = RentalStatus.COMPLETED
        service.settle_rental(session, rental, t0 + timedelta(milliseconds=max(ticks)))
    row = accrual(party.rental_id)
    assert row.billed_seconds == seconds
    assert row.billed_amount == amount_for_seconds(price, seconds)


@given(price=prices, balance=st.decimals(min_value=D("0"), max_value=D("10000"), places=4))
def test_credit_minutes_left_is_the_most_minutes_the_balance_pays_for(price, balance):
    minutes = credit_minutes_left(balance, price)
    assert minutes is not None
    assert amount_for_minutes(price, minutes) <= balance
    assert amount_for_minutes(price, minutes + 1) > balance


def test_credit_minutes_left_of_an_empty_balance_or_a_free_price():
    assert credit_minutes_left(D("0"), D("6")) == 0
    assert credit_minutes_left(D("1"), D("6")) == 10
    assert credit_minutes_left(D("5"), D("0")) is None


def test_cost_so_far_adds_the_whole_seconds_not_yet_posted(t0):
    party = create_party(price="6", start=t0)
    assert cost_at(party, t0 + timedelta(minutes=2, seconds=1)) == D("0.2017")
    assert cost_at(party, t0 + timedelta(minutes=1)) == D("0.1")


def test_cost_so_far_between_postings_is_the_posted_bill_plus_the_seconds_since(tick, t0):
    party = create_party(price="6", balance="100", start=t0)
    tick(t0 + timedelta(hours=1, seconds=10))
    assert accrual(party.rental_id).billed_amount == D("6.0167")  # 3610 seconds posted
    at = t0 + timedelta(hours=1, seconds=30, microseconds=9)
    between = cost_at(party, at)
    assert between == amount_for_seconds(D("6"), 3630) == D("6.05")
    assert D("100") - balance_of(party.renter_id, at) == between
    # A moment before the posting, the posted seconds are not taken back.
    assert cost_at(party, t0 + timedelta(minutes=5)) == D("6.0167")


def test_cost_so_far_stops_growing_once_a_stop_is_requested(t0):
    party = create_party(price="6", start=t0)
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        rental.stop_requested_at = t0 + timedelta(minutes=2, seconds=30)
    assert cost_at(party, t0 + timedelta(minutes=3, seconds=30)) == D("0.25")


def test_cost_so_far_of_an_ended_rental_is_what_was_billed(t0):
    rental = Rental(
        status=RentalStatus.COMPLETED,
        cost_per_hour=D("6"),
        start_time=t0,
        end_time=t0 + timedelta(hours=1),
        billed_minutes=7,
        billed_amount=D("0.7"),
    )
    assert cost_so_far(rental, t0 + timedelta(days=3)) == D("0.7")


def test_a_pending_rental_has_cost_nothing(t0):
    rental = Rental(status=RentalStatus.PENDING, cost_per_hour=D("6"))
    assert cost_so_far(rental, t0) == D("0")
