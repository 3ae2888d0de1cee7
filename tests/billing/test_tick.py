"""The billing tick: balances derived per second, hourly postings, no double charge, running out,
offline time, stop requests and the final settlement."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.billing import service
from app.billing.rules import amount_for_seconds, fee_for
from app.db import session_scope
from app.enums import NodeStatus
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.rentals.models import Rental
from tests.billing.factory import (
    accrual,
    balance_of,
    billed_seconds,
    cost_at,
    create_party,
    ledger,
    line_count,
    posted_balance_of,
    queued_stops,
    rental_row,
)

D = Decimal


def test_a_renters_balance_falls_every_second_while_a_tick_writes_nothing(tick, t0, invariants):
    party = create_party(price="1.2345", balance="10", start=t0)
    at = t0 + timedelta(minutes=2, seconds=1, microseconds=500_000)
    run = tick(at)
    assert (run.written, run.charged, run.lines, run.balances) == (0, 0, 0, 0)
    assert run.rows_written == 1  # the tick's watermark
    due = amount_for_seconds(D("1.2345"), 121)  # the half second is free
    assert due == D("0.0415")
    assert balance_of(party.renter_id, at) == D("10") - due
    assert cost_at(party, at) == due
    # Between ticks too: the balance is the clock, not the last tick.
    assert balance_of(party.renter_id, t0 + timedelta(seconds=61)) == D(10) - D("0.0209")
    # Nothing is posted before the rental's first hour mark: the accounts hold the ledger.
    assert posted_balance_of(party.renter_id) == D("10")
    assert balance_of(party.host_id, at) == 0  # earnings count once posted
    assert accrual(party.rental_id) is None
    assert line_count(party.rental_id) == 0
    report = invariants()
    assert report["ok"], report["differences"]


def test_a_second_is_billed_once_it_has_fully_passed(tick, t0):
    party = create_party(price="6", start=t0)
    assert cost_at(party, t0 + timedelta(microseconds=999_999)) == 0
    assert cost_at(party, t0 + timedelta(seconds=1)) == D("0.0017")
    assert cost_at(party, t0 + timedelta(seconds=61, microseconds=1)) == D("0.1017")
    tick(t0 + timedelta(hours=1, microseconds=999_999))
    assert billed_seconds(party.rental_id) == 3600
    assert ledger(party.rental_id)["usage"] == D(6)


def test_an_hour_of_the_rental_is_posted_as_three_exact_ledger_lines(tick, t0, invariants):
    party = create_party(price="2.7183", start=t0)
    for minute in range(1, 60):
        assert tick(t0 + timedelta(minutes=minute, seconds=7)).rows_written == 1
    assert line_count(party.rental_id) == 0
    run = tick(t0 + timedelta(hours=1, seconds=7))
    assert (run.postings, run.lines, run.written) == (1, 3, 1)
    due = amount_for_seconds(D("2.7183"), 3607)
    fee = fee_for(due, D(10))
    assert ledger(party.rental_id) == {"usage": due, "earning": due - fee, "fee": fee}
    assert posted_balance_of(party.renter_id) == D(100) - due
    assert posted_balance_of(party.host_id) == due - fee
    row = accrual(party.rental_id)
    assert (row.billed_seconds, row.billed_amount, row.billed_fee) == (3607, due, fee)
    assert (row.postings, row.posted_until) == (1, t0 + timedelta(hours=1))
    assert invariants()["ok"]


def test_ticks_every_minute_write_only_the_postings_of_the_rentals_whose_hour_has_passed(tick, t0):
    parties = [
        create_party(price=f"{1 + i}.0001", start=t0 + timedelta(minutes=20 * i)) for i in range(3)
    ]
    written, rows = [], []
    for minute in range(1, 181):
        run = tick(t0 + timedelta(minutes=minute, seconds=30))
        written.append(run.written)
        rows.append(run.rows_written)
    # Each rental posts once an hour, at the tick after its own hour mark: 60, 80, 100, 120...
    posted_at = {m for m, w in enumerate(written, start=1) if w}
    assert posted_at == {60, 80, 100, 120, 140, 160, 180}
    assert set(written) == {0, 1}
    # A tick writes its watermark, and a posting its accrual row, three lines and three balances.
    assert {r for r, w in zip(rows, written, strict=True) if not w} == {1}
    assert {r for r, w in zip(rows, written, strict=True) if w} == {8}
    for i, party in enumerate(parties):
        hours = 3 - i if i < 2 else 2
        assert accrual(party.rental_id).postings == hours
        assert line_count(party.rental_id) == 3 * hours
        seconds = 3600 * hours + 30  # each posting bills up to its tick
        assert ledger(party.rental_id)["usage"] == amount_for_seconds(party.cost_per_hour, seconds)


def test_the_same_tick_run_twice_charges_once(tick, t0, invariants):
    party = create_party(price="3.3333", start=t0)
    now = t0 + timedelta(hours=1, seconds=30)
    first = tick(now)
    second = tick(now)
    assert (first.written, first.postings) == (1, 1)
    assert (second.written, second.charged, second.lines) == (0, 0, 0)
    assert ledger(party.rental_id)["usage"] == amount_for_seconds(D("3.3333"), 3630)
    assert line_count(party.rental_id) == 3
    assert invariants()["ok"]


def test_a_missed_hour_mark_waits_for_the_next_one_while_the_balance_never_waits(tick, t0):
    party = create_party(price="2.5", start=t0)
    tick(t0 + timedelta(minutes=1))
    late = t0 + timedelta(hours=3, minutes=45, seconds=10)  # three hours of ticks missed
    run = tick(late)
    assert run.written == 0  # no backlog lands on one tick
    assert balance_of(party.renter_id, late) == D(100) - amount_for_seconds(D("2.5"), 13510)
    run = tick(t0 + timedelta(hours=4, seconds=20))
    assert run.postings == 1  # one posting for all the hours missed
    row = accrual(party.rental_id)
    assert (row.billed_seconds, row.postings) == (14420, 1)
    assert row.posted_until == t0 + timedelta(hours=4)
    assert ledger(party.rental_id)["usage"] == amount_for_seconds(D("2.5"), 14420)


def test_a_tick_earlier_than_the_watermark_charges_nothing(tick, t0):
    party = create_party(price="2.5", start=t0)
    tick(t0 + timedelta(hours=1, seconds=10))
    run = tick(t0 + timedelta(minutes=3))  # a late, redelivered message with an older clock
    assert (run.written, run.charged) == (0, 0)
    assert billed_seconds(party.rental_id) == 3610
    assert balance_of(party.renter_id, t0 + timedelta(minutes=3)) == D(100) - D("2.5069")
    with session_scope() as session:
        assert service.unbilled_since(session) == t0 + timedelta(hours=1, seconds=10)


def test_two_ticks_at_once_charge_each_second_once(settings, t0, invariants):
    parties = [create_party(price="1.7777", start=t0) for _ in range(30)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    now = t0 + timedelta(minutes=60, seconds=5)

    def worker() -> None:
        try:
            with session_scope() as session:
                barrier.wait()
                service.bill_active_rentals(session, now=now, settings=settings)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    for party in parties:
        assert ledger(party.rental_id)["usage"] == amount_for_seconds(D("1.7777"), 3605)
        assert line_count(party.rental_id) == 3
    assert invariants()["ok"]


def test_the_database_refuses_a_running_total_off_the_per_second_rule(tick, t0):
    party = create_party(price="6", start=t0)
    tick(t0 + timedelta(hours=1, minutes=1))
    for change in (
        "billed_amount = billed_amount + 0.0001",
        "billed_seconds = billed_seconds + 1",
        "waived_amount = waived_amount + 0.0001",
        "billed_fee = billed_amount + 0.0001",
    ):
        with pytest.raises(IntegrityError), session_scope() as session:
            session.execute(
                text(f"UPDATE rental_accruals SET {change} WHERE rental_id = :r"),
                {"r": party.rental_id},
            )
    assert accrual(party.rental_id).billed_amount == D("6.1")


def test_the_database_refuses_a_second_posting_with_the_same_number(tick, t0):
    party = create_party(price="6", start=t0)
    tick(t0 + timedelta(hours=1, seconds=5))
    with pytest.raises(IntegrityError), session_scope() as session:
        session.execute(
            text(
                "INSERT INTO transactions (id, user_id, amount, type, kind, rental_id, posting) "
                "VALUES (gen_random_uuid(), :u, 0.1, 'debit', 'usage', :r, 1)"
            ),
            {"u": party.renter_id, "r": party.rental_id},
        )
    assert line_count(party.rental_id) == 3


def test_a_renter_who_runs_out_pays_what_the_balance_covers_and_the_rental_is_stopped(
    app, t0, invariants
):
    from app.billing.actors import bill_active_rentals

    # 6.00/h is 0.10 a minute; 0.25 pays two and a half minutes. The rental started a day ago, so
    # the balance cannot cover what it owes: the tick posts what it covers and waives the rest.
    party = create_party(price="6", balance="0.25", start=t0 - timedelta(minutes=10))
    bill_active_rentals.fn()
    assert balance_of(party.renter_id) == D("0")
    assert ledger(party.rental_id) == {
        "usage": D("0.25"),
        "earning": D("0.2250"),
        "fee": D("0.0250"),
    }
    assert queued_stops() == [{"rental_id": str(party.rental_id), "reason": "insufficient balance"}]
    assert invariants()["ok"], invariants()


def test_a_renter_who_cannot_pay_the_next_minute_is_stopped_with_a_positive_balance(tick, t0):
    party = create_party(price="6", balance="0.30", start=t0)
    at = t0 + timedelta(minutes=2, seconds=30)
    run = tick(at)  # 150 seconds: 0.25, 0.05 left
    assert run.to_stop == [party.rental_id]
    assert run.written == 0  # all it owes is covered: nothing to post yet
    assert balance_of(party.renter_id, at) == D("0.05")


def test_a_rental_already_being_stopped_is_not_asked_to_stop_again(tick, t0):
    party = create_party(price="6", balance="0.15", start=t0)
    assert tick(t0 + timedelta(minutes=1, seconds=1)).to_stop == [party.rental_id]
    with session_scope() as session:
        session.execute(
            text("UPDATE rentals SET stop_requested_at = now() WHERE id = :r"),
            {"r": party.rental_id},
        )
    run = tick(t0 + timedelta(minutes=3, seconds=1))
    assert run.to_stop == []
    assert run.written == 1  # what the balance no longer covers is fixed: waived
    assert posted_balance_of(party.renter_id) == D("0")  # the last seconds took what was left
    assert balance_of(party.renter_id, t0 + timedelta(minutes=3, seconds=1)) == D("0")


def test_seconds_no_balance_covered_are_not_charged_after_a_top_up(tick, t0, invariants):
    party = create_party(price="6", balance="0.05", start=t0)
    run = tick(t0 + timedelta(minutes=3))
    assert (run.written, run.total, run.waived) == (1, D("0.05"), D("0.25"))
    assert balance_of(party.renter_id, t0 + timedelta(minutes=3)) == D("0")
    with session_scope() as session:
        session.execute(
            text("UPDATE users SET balance = balance + 5 WHERE id = :u"), {"u": party.renter_id}
        )
        session.execute(
            text(
                "INSERT INTO transactions (id, user_id, amount, type, kind, "
                "reference_id) VALUES (gen_random_uuid(), :u, 5, 'credit', "
                "'topup', 'late-top-up')"
            ),
            {"u": party.renter_id},
        )
    at = t0 + timedelta(minutes=4)
    tick(at)
    # The first three minutes were covered by 0.05 only; the fourth is paid in full.
    assert cost_at(party, at) == D("0.15")
    assert balance_of(party.renter_id, at) == D("4.9")
    with session_scope() as session:
        service.settle_rental(session, session.get_one(Rental, party.rental_id), at)
    row = accrual(party.rental_id)
    assert (row.billed_seconds, row.billed_amount, row.waived_amount) == (240, D("0.15"), D("0.25"))
    assert posted_balance_of(party.renter_id) == D("4.9")
    assert invariants()["ok"]


def test_a_renters_rentals_are_paid_oldest_first_when_the_balance_runs_out(tick, t0):
    from tests.billing.factory import make_party

    with session_scope() as session:
        first = make_party(session, price="6", balance="0.5", start=t0)
        from app.auth.models import User

        renter = session.get(User, first.renter_id)
        second = make_party(session, price="6", renter=renter, start=t0 + timedelta(seconds=1))
    at = t0 + timedelta(minutes=3)
    run = tick(at)
    # 180 seconds (0.30) of the first, then what is left for the 179 seconds of the second: that
    # one is posted (its waived part fixed), the first still owes what the balance covers.
    assert cost_at(first, at) == D("0.30")
    assert accrual(first.rental_id) is None
    assert accrual(second.rental_id).billed_amount == D("0.20")
    assert accrual(second.rental_id).waived_amount == D("0.0983")
    assert posted_balance_of(first.renter_id) == D("0.30")
    assert balance_of(first.renter_id, at) == 0
    assert set(run.to_stop) == {first.rental_id, second.rental_id}


def test_seconds_after_the_last_heartbeat_of_an_offline_node_are_free(tick, t0, invariants):
    party = create_party(
        price="6",
        start=t0,
        node_status=NodeStatus.OFFLINE,
        last_seen_at=t0 + timedelta(minutes=4, seconds=10),
    )
    at = t0 + timedelta(minutes=30)
    tick(at)
    assert cost_at(party, at) == D("0.4167")  # 250 seconds
    assert balance_of(party.renter_id, at) == D(100) - D("0.4167")
    assert invariants()["ok"]


def test_an_offline_spell_is_not_billed_when_the_node_comes_back(tick, t0, settings):
    party = create_party(price="6", start=t0)
    assert cost_at(party, t0 + timedelta(minutes=10)) == D(1)
    # The node stops at minute 12 and is flipped offline HEARTBEAT_TIMEOUT later; it is back at 40.
    gone = t0 + timedelta(minutes=12)
    with session_scope() as session:
        node = session.get_one(HostNode, party.node_id)
        transition_node(session, node, NodeStatus.OFFLINE, reason="test")
        node.last_seen_at = gone
    _move_last_event(party.node_id, gone + timedelta(seconds=settings.heartbeat_timeout_seconds))
    assert cost_at(party, t0 + timedelta(minutes=20)) == D("1.2")  # 720 seconds
    with session_scope() as session:
        node = session.get_one(HostNode, party.node_id)
        transition_node(session, node, NodeStatus.BUSY, reason="test")
        node.last_seen_at = t0 + timedelta(minutes=40)
    _move_last_event(party.node_id, t0 + timedelta(minutes=40))
    # 12 minutes before the spell, 10 after it: 22 minutes of the billable clock.
    assert cost_at(party, t0 + timedelta(minutes=50)) == D("2.2")
    # Posted at the hour mark: 12 minutes before the spell, 20 minutes and a second after it.
    tick(t0 + timedelta(hours=1, seconds=1))
    row = accrual(party.rental_id)
    assert (row.billed_seconds, row.billed_amount) == (1921, D("3.2017"))


def test_seconds_after_the_stop_request_are_free_while_the_agent_confirms(tick, t0, invariants):
    party = create_party(price="6", start=t0)
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        rental.stop_requested_at = t0 + timedelta(minutes=7, seconds=5)
    tick(t0 + timedelta(minutes=30))
    # 425 seconds had passed when the stop was asked for; nothing after it is charged.
    assert cost_at(party, t0 + timedelta(minutes=30)) == D("0.7083")
    assert cost_at(party, t0 + timedelta(hours=5)) == D("0.7083")
    assert invariants()["ok"]


def _move_last_event(node_id, at) -> None:
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE node_status_events SET at = :at WHERE id = (SELECT max(id) FROM "
                "node_status_events WHERE node_id = :n)"
            ),
            {"at": at, "n": node_id},
        )


def test_settling_bills_up_to_the_last_whole_second_and_posts_everything(app, t0, invariants):
    party = create_party(price="6", start=t0)
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        service.settle_rental(session, rental, t0 + timedelta(minutes=3, seconds=1.9))
        assert rental.billed_amount == D("0.3017")  # 181 seconds at 6.00 per hour
    assert ledger(party.rental_id) == {
        "usage": D("0.3017"),
        "earning": D("0.2715"),
        "fee": D("0.0302"),
    }
    row = accrual(party.rental_id)
    assert (row.billed_seconds, row.billed_amount, row.postings) == (181, D("0.3017"), 1)
    assert invariants()["ok"]


def test_settling_a_rental_on_an_offline_node_stops_at_its_last_heartbeat(app, t0):
    party = create_party(
        price="6",
        start=t0,
        node_status=NodeStatus.OFFLINE,
        last_seen_at=t0 + timedelta(minutes=2, seconds=5),
    )
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        service.settle_rental(session, rental, t0 + timedelta(minutes=12))
    assert billed_seconds(party.rental_id) == 125


def test_settling_charges_what_the_balance_covers_and_never_below_zero(app, t0, invariants):
    party = create_party(price="6", balance="0.33", start=t0)
    with session_scope() as session:
        rental = session.get_one(Rental, party.rental_id)
        service.settle_rental(session, rental, t0 + timedelta(minutes=9))
    assert balance_of(party.renter_id) == posted_balance_of(party.renter_id) == 0
    assert ledger(party.rental_id)["usage"] == D("0.33")
    assert invariants()["ok"]


def test_the_stop_message_billing_sends_stops_the_rental_through_the_normal_path(app, t0):
    from app.billing.actors import bill_active_rentals
    from app.rentals.actors import stop_rental

    party = create_party(price="6", balance="0.05", start=t0)
    bill_active_rentals.fn()
    [kwargs] = queued_stops()
    stop_rental.fn(**kwargs)
    row = rental_row(party.rental_id)
    assert row.stop_requested_at is not None
    assert row.stop_reason == "insufficient balance"
    bill_active_rentals.fn()
    assert queued_stops() == [kwargs]  # not asked again once the stop is under way


def test_the_scheduler_sends_the_tick_every_billing_tick_seconds(settings):
    from app.actors import periodic_jobs
    from app.billing.actors import bill_active_rentals

    jobs = {actor.actor_name: seconds for actor, seconds in periodic_jobs()}
    assert jobs[bill_active_rentals.actor_name](settings) == settings.billing_tick_seconds


def test_a_rental_ended_while_a_tick_runs_is_billed_exactly_once(settings, t0, invariants):
    from sqlalchemy import select

    from app.enums import RentalStatus

    parties = [create_party(price="2.2222", start=t0) for _ in range(20)]
    end = t0 + timedelta(minutes=60, seconds=20)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def ticker() -> None:
        try:
            with session_scope() as session:
                barrier.wait()
                service.bill_active_rentals(
                    session, now=end + timedelta(seconds=30), settings=settings
                )
        except BaseException as exc:
            errors.append(exc)

    def ender() -> None:
        try:
            with session_scope() as session:
                # As the rentals domain ends a rental: its row locked, then settled.
                ids = [p.rental_id for p in parties[::2]]
                rentals = (
                    session.execute(
                        select(Rental)
                        .where(Rental.id.in_(ids))
                        .order_by(Rental.id)
                        .with_for_update()
                    )
                    .scalars()
                    .all()
                )
                barrier.wait()
                for rental in rentals:
                    rental.status, rental.end_time = RentalStatus.COMPLETED, end
                    service.settle_rental(session, rental, end)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ticker), threading.Thread(target=ender)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    ended = {r.id for r in _all_rentals() if r.status == RentalStatus.COMPLETED}
    assert ended == {p.rental_id for p in parties[::2]}
    for party in parties:
        seconds = 3620 if party.rental_id in ended else 3650
        assert billed_seconds(party.rental_id) == seconds
        due = amount_for_seconds(D("2.2222"), seconds)
        assert accrual(party.rental_id).billed_amount == due
        if party.rental_id in ended:
            assert ledger(party.rental_id)["usage"] == due  # the final posting
            assert rental_row(party.rental_id).billed_amount == due
    assert invariants()["ok"]


def _all_rentals():
    from sqlalchemy import select

    with session_scope() as session:
        return session.execute(select(Rental)).scalars().all()
