"""A thousand rentals with random prices, durations, balances and offline nodes stay exact to the
second, and the ticks write only the postings due."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select, text

from app.billing import accrued, service
from app.billing.models import RentalAccrual, Transaction
from app.billing.rules import amount_for_seconds
from app.db import session_scope
from app.enums import NodeStatus, RentalStatus
from app.rentals.models import Rental
from tests.billing.factory import balance_of, make_account, make_party


def test_a_thousand_random_rentals_keep_every_invariant_to_the_last_ten_thousandth(
    settings, t0, tick, invariants
):
    rng = random.Random(20261127)
    parties = []
    expected_end = {}
    with session_scope() as session:
        renters = [
            make_account(session, balance=Decimal(rng.randint(0, 400_000)) / 10_000)
            for _ in range(300)
        ]
        hosts = [make_account(session) for _ in range(100)]
        for _ in range(1000):
            start = t0 + timedelta(
                seconds=rng.randint(0, 6 * 3600), microseconds=rng.randint(0, 999_999)
            )
            offline = rng.random() < 0.1
            last_seen = start + timedelta(seconds=rng.randint(0, 5 * 3600))
            party = make_party(
                session,
                price=Decimal(rng.randint(1, 500_000)) / 10_000,
                start=start,
                renter=rng.choice(renters),
                host=rng.choice(hosts),
                node_status=NodeStatus.OFFLINE if offline else NodeStatus.BUSY,
                last_seen_at=last_seen,
            )
            parties.append(party)
            expected_end[party.rental_id] = last_seen if offline else None

    now = t0 + timedelta(hours=6)
    ended: dict = {}
    for _ in range(6):
        # Up to an hour and a half between ticks: some ticks post, some do not.
        now += timedelta(seconds=rng.randint(1, 5400), microseconds=rng.randint(0, 999_999))
        tick(now)
        # Some rentals end between ticks, each settled up to its own end time.
        with session_scope() as session:
            for party in rng.sample(parties, 40):
                if party.rental_id in ended:
                    continue
                rental = session.get_one(Rental, party.rental_id)
                end = now + timedelta(seconds=rng.randint(0, 59))
                rental.status, rental.end_time = RentalStatus.COMPLETED, end
                service.settle_rental(session, rental, end)
                ended[party.rental_id] = end

    report = invariants()
    assert report["ok"], report["differences"][:5]
    # Every renter's balance as seen at `now` covers what its running rentals owe.
    with session_scope() as session:
        seen = accrued.balances(session, [p.renter_id for p in parties], now=now)
    assert min(seen.values()) >= 0

    # The rest end now: every rental is then fully posted, exact to its last second.
    with session_scope() as session:
        for party in parties:
            if party.rental_id not in ended:
                rental = session.get_one(Rental, party.rental_id)
                rental.status, rental.end_time = RentalStatus.COMPLETED, now
                service.settle_rental(session, rental, now)
    report = invariants()
    assert report["ok"], report["differences"][:5]
    totals = report["totals"]
    assert Decimal(totals["usage"]) == Decimal(totals["earnings"]) + Decimal(totals["fees"])
    assert Decimal(totals["usage"]) > 0
    assert Decimal(totals["unposted_usage"]) == 0

    with session_scope() as session:
        rows = {r.rental_id: r for r in session.execute(select(RentalAccrual)).scalars()}
        usage = dict(
            session.execute(
                select(Transaction.rental_id, func.sum(Transaction.amount))
                .where(Transaction.kind == "usage")
                .group_by(Transaction.rental_id)
            ).all()
        )
        negative = session.execute(text_negative()).scalar_one()
    assert negative == 0
    short = 0
    for party in parties:
        row = rows[party.rental_id]
        end = ended.get(party.rental_id, now)
        if expected_end[party.rental_id] is not None:
            end = min(end, max(expected_end[party.rental_id], party.start))
        seconds = int(max((end - party.start).total_seconds(), 0))
        assert row.billed_seconds == seconds, party
        assert row.billed_amount == usage.get(party.rental_id, Decimal(0))
        full = amount_for_seconds(party.cost_per_hour, seconds)
        assert row.billed_amount + row.waived_amount == full
        short += row.billed_amount < full
    # Some renters ran out and some did not: both paths were exercised.
    assert 0 < short < len(parties)


def text_negative():
    from sqlalchemy import text

    return text("SELECT count(*) FROM users WHERE balance < 0")


def test_ticks_each_minute_write_less_than_a_row_per_rental_and_stop_renters_at_zero(t0, tick):
    with session_scope() as session:
        host = make_account(session)
        # Started six seconds apart over an hour: their hour marks spread over the hour.
        parties = [
            make_party(
                session,
                price=Decimal(1 + i % 7) / 2,
                balance="1000",
                start=t0 + timedelta(seconds=6 * i),
                host=host,
            )
            for i in range(600)
        ]
        # Five renters whose balance pays for five minutes of their rental.
        poor = [
            make_party(session, price="6", balance="0.5", start=t0 + timedelta(hours=1), host=host)
            for _ in range(5)
        ]
    postings: list[int] = []
    for minute in range(1, 121):
        run = tick(t0 + timedelta(hours=1, minutes=minute))
        assert run.looked == 605
        assert run.rows_written <= run.looked, (minute, run)
        # Only the rentals whose hour mark has just passed and the renters near zero are priced
        # exactly; every other renter is covered by the bound.
        assert run.priced <= 20, (minute, run)
        postings.append(run.written)
        if minute < 5:
            assert run.to_stop == []
        elif minute == 5:  # 0.50 owed, nothing left for the next minute
            assert sorted(run.to_stop) == sorted(p.rental_id for p in poor)
            with session_scope() as session:
                session.execute(
                    text("UPDATE rentals SET stop_requested_at = :at WHERE id = ANY(:ids)"),
                    {"at": t0 + timedelta(hours=1, minutes=5), "ids": run.to_stop},
                )
    # About a sixtieth of the rentals post each minute, and every rental posts once an hour.
    assert max(postings) <= 15 and sum(postings) >= 1200
    with session_scope() as session:
        counts = dict(
            session.execute(select(RentalAccrual.rental_id, RentalAccrual.postings)).all()
        )
    assert {counts[p.rental_id] for p in parties} <= {2, 3}
    for party in poor:
        assert balance_of(party.renter_id, t0 + timedelta(hours=3)) == 0
