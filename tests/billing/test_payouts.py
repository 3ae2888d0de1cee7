"""Payouts and earnings: request, approve, reject, the hold period, overdraw, concurrency, access."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from app.auth.models import User
from app.billing import payouts
from app.billing.models import PAYOUTS_PAID_CLERK_ID, PAYOUTS_PENDING_CLERK_ID, Transaction
from app.db import session_scope, utcnow
from app.errors import Conflict
from tests.billing.factory import balance_of, make_party

PAYOUTS = "/api/v1/billing/payouts"
D = Decimal


def _system_balance(clerk_id: str) -> Decimal:
    with session_scope() as session:
        value = session.execute(select(User.balance).where(User.clerk_id == clerk_id)).scalar()
    return D(0) if value is None else value


def _payout_lines(payout_id: str) -> list[tuple[str, str, Decimal]]:
    with session_scope() as session:
        rows = session.execute(
            select(Transaction.kind, Transaction.type, Transaction.amount)
            .where(Transaction.payout_id == uuid.UUID(payout_id))
            .order_by(Transaction.kind, Transaction.type)
        ).all()
    return [(kind, str(kind_type.value), amount) for kind, kind_type, amount in rows]


def _earn(host_id: uuid.UUID, t0, tick, *, hours: int = 1, price: str = "36") -> uuid.UUID:
    """A rental on a new node of the host, billed and posted for `hours` hours: real earnings."""
    with session_scope() as session:
        host = session.get_one(User, host_id)
        party = make_party(session, host=host, price=price, balance="10000", start=t0)
    for hour in range(1, hours + 1):
        tick(t0 + timedelta(hours=hour))
    return party.node_id


def _age_earnings(host_id: uuid.UUID, days: int) -> None:
    """Move the posted earning (and fee) lines of the host's rentals `days` into the past."""
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE transactions SET created_at = created_at - make_interval(days => :d) "
                "WHERE kind IN ('earning', 'fee') AND rental_id IN "
                "(SELECT rental_id FROM rental_accruals WHERE host_id = :u)"
            ),
            {"d": days, "u": host_id},
        )


def test_a_host_requests_a_payout_from_its_available_balance(client, make_user, invariants):
    host = make_user(balance="50")
    response = client.post(PAYOUTS, json={"amount": "20"}, headers=host.headers)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["amount"] == "20.0000" and body["status"] == "requested"
    assert body["id"] and body["created_at"]
    assert balance_of(host.id) == D("30.0000")
    assert _system_balance(PAYOUTS_PENDING_CLERK_ID) == D("20.0000")
    assert _payout_lines(body["id"]) == [("payout", "credit", D(20)), ("payout", "debit", D(20))]
    listed = client.get(PAYOUTS, headers=host.headers)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json["items"]] == [body["id"]]
    assert listed.json["next_cursor"] is None
    assert client.get(f"{PAYOUTS}/{body['id']}", headers=host.headers).json == body
    assert invariants()["ok"], invariants()["differences"]


def test_an_approved_payout_moves_from_pending_to_paid_out_once(
    client, make_user, admin, invariants
):
    host = make_user(balance="50")
    payout_id = client.post(PAYOUTS, json={"amount": "20.5"}, headers=host.headers).json["id"]
    approved = client.post(f"{PAYOUTS}/{payout_id}/approve", headers=admin.headers)
    assert approved.status_code == 200, approved.json
    assert approved.json["status"] == "approved" and approved.json["decided_at"]
    assert balance_of(host.id) == D("29.5000")
    assert _system_balance(PAYOUTS_PENDING_CLERK_ID) == D(0)
    assert _system_balance(PAYOUTS_PAID_CLERK_ID) == D("20.5000")
    assert sorted(_payout_lines(payout_id)) == [
        ("payout", "credit", D("20.5")),
        ("payout", "debit", D("20.5")),
        ("payout_paid", "credit", D("20.5")),
        ("payout_paid", "debit", D("20.5")),
    ]
    again = client.post(f"{PAYOUTS}/{payout_id}/approve", headers=admin.headers)
    assert again.status_code == 409
    rejected = client.post(
        f"{PAYOUTS}/{payout_id}/reject", json={"reason": "too late"}, headers=admin.headers
    )
    assert rejected.status_code == 409
    assert len(_payout_lines(payout_id)) == 4
    assert invariants()["ok"], invariants()["differences"]


def test_a_rejected_payout_returns_the_amount_to_the_host_once(
    client, make_user, admin, invariants
):
    host = make_user(balance="50")
    payout_id = client.post(PAYOUTS, json={"amount": "50"}, headers=host.headers).json["id"]
    assert balance_of(host.id) == D(0)
    no_reason = client.post(f"{PAYOUTS}/{payout_id}/reject", json={}, headers=admin.headers)
    assert no_reason.status_code == 422
    rejected = client.post(
        f"{PAYOUTS}/{payout_id}/reject",
        json={"reason": "bank details missing"},
        headers=admin.headers,
    )
    assert rejected.status_code == 200, rejected.json
    assert rejected.json["status"] == "rejected"
    assert rejected.json["reason"] == "bank details missing"
    assert balance_of(host.id) == D("50.0000")
    assert _system_balance(PAYOUTS_PENDING_CLERK_ID) == D(0)
    assert _system_balance(PAYOUTS_PAID_CLERK_ID) == D(0)
    again = client.post(
        f"{PAYOUTS}/{payout_id}/reject", json={"reason": "twice"}, headers=admin.headers
    )
    assert again.status_code == 409
    assert client.post(f"{PAYOUTS}/{payout_id}/approve", headers=admin.headers).status_code == 409
    assert balance_of(host.id) == D("50.0000")
    assert invariants()["ok"], invariants()["differences"]


def test_recent_earnings_are_held_until_the_hold_period_has_passed(
    client, make_user, t0, tick, settings, invariants
):
    assert settings.payout_hold_days == 7
    host = make_user()
    _earn(host.id, t0, tick)  # one hour at 36: 3.6 fee, 32.4 earned
    assert balance_of(host.id) == D("32.4000")
    held = client.post(PAYOUTS, json={"amount": "0.0001"}, headers=host.headers)
    assert held.status_code == 409, held.json
    assert "available" in held.json["message"]
    _age_earnings(host.id, 6)
    assert client.post(PAYOUTS, json={"amount": "1"}, headers=host.headers).status_code == 409
    _age_earnings(host.id, 2)
    paid = client.post(PAYOUTS, json={"amount": "32.4"}, headers=host.headers)
    assert paid.status_code == 201, paid.json
    assert client.post(PAYOUTS, json={"amount": "0.0001"}, headers=host.headers).status_code == 409
    assert balance_of(host.id) == D(0)
    assert invariants()["ok"], invariants()["differences"]


def test_earnings_that_are_not_posted_yet_are_neither_in_the_balance_nor_available(
    make_user, t0, tick, settings
):
    host = make_user()
    _earn(host.id, t0, tick)
    _age_earnings(host.id, 8)
    tick(t0 + timedelta(hours=1, minutes=30))  # half an hour accrued, not posted
    assert balance_of(host.id, t0 + timedelta(hours=1, minutes=30)) == D("32.4000")
    with session_scope() as session:
        user = session.get_one(User, host.id)
        available = payouts.available_for_payout(session, user=user, settings=settings)
    assert available == D("32.4000")
    tick(t0 + timedelta(hours=2))  # posted: earned, and held for the hold period
    assert balance_of(host.id) == D("64.8000")
    with session_scope() as session:
        user = session.get_one(User, host.id)
        available = payouts.available_for_payout(session, user=user, settings=settings)
    assert available == D("32.4000")


def test_what_a_host_owes_as_a_renter_is_not_available(make_user, t0, settings):
    free = replace(settings, payout_hold_days=0)
    host = make_user(balance="10")
    with session_scope() as session:
        make_party(session, renter=session.get_one(User, host.id), price="6", start=t0)
        user = session.get_one(User, host.id)
        at = t0 + timedelta(minutes=30)  # 3.00 owed, not posted
        assert payouts.available_for_payout(session, user=user, settings=free, now=at) == D(7)
        with pytest.raises(Conflict):
            payouts.request_payout(
                session, user_id=host.id, amount=D("7.0001"), settings=free, now=at
            )
        payouts.request_payout(session, user_id=host.id, amount=D(7), settings=free, now=at)
    assert balance_of(host.id, t0 + timedelta(minutes=30)) == D(0)


def test_a_payout_above_the_available_balance_is_refused_and_writes_nothing(
    client, make_user, invariants
):
    host = make_user(balance="10")
    response = client.post(PAYOUTS, json={"amount": "10.0001"}, headers=host.headers)
    assert response.status_code == 409, response.json
    assert response.json["errors"] == {"amount": ["At most 10.0000."]}
    assert balance_of(host.id) == D("10.0000")
    assert client.get(PAYOUTS, headers=host.headers).json["items"] == []
    assert client.post(PAYOUTS, json={"amount": "10"}, headers=host.headers).status_code == 201
    assert client.post(PAYOUTS, json={"amount": "0.0001"}, headers=host.headers).status_code == 409
    assert invariants()["ok"], invariants()["differences"]


@pytest.mark.parametrize("amount", ["-5", "0", "0.0000", "abc", 1.5, "1.00001", None, ""])
def test_a_bad_payout_amount_is_a_422(client, make_user, amount):
    host = make_user(balance="10")
    response = client.post(PAYOUTS, json={"amount": amount}, headers=host.headers)
    assert response.status_code == 422, response.json
    assert "amount" in str(response.json["errors"])
    assert balance_of(host.id) == D("10.0000")


def test_an_idempotency_key_requests_the_payout_once(client, make_user):
    host = make_user(balance="10")
    headers = {**host.headers, "Idempotency-Key": "payout-1"}
    first = client.post(PAYOUTS, json={"amount": "4"}, headers=headers)
    second = client.post(PAYOUTS, json={"amount": "4"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    assert balance_of(host.id) == D("6.0000")
    assert client.post(PAYOUTS, json={"amount": "5"}, headers=headers).status_code == 409


def test_concurrent_payout_requests_never_overdraw(make_user, settings, invariants):
    host = make_user(balance="100")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        try:
            with session_scope() as session:
                payouts.request_payout(session, user_id=host.id, amount=D("30"), settings=settings)
            results.append("paid")
        except Conflict:
            results.append("refused")

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["paid"] * 3 + ["refused"] * 5
    assert balance_of(host.id) == D("10.0000")
    assert _system_balance(PAYOUTS_PENDING_CLERK_ID) == D("90.0000")
    assert invariants()["ok"], invariants()["differences"]


def test_payouts_and_billing_ticks_running_together_keep_every_invariant(
    make_user, t0, tick, settings, invariants
):
    # The host also rents: its balance falls every second while it asks for payouts, and the
    # ticks post its rental's hours.
    free = replace(settings, payout_hold_days=0)
    host = make_user(balance="40")
    start = utcnow() - timedelta(minutes=1)
    with session_scope() as session:
        make_party(session, renter=session.get_one(User, host.id), price="60", start=start)
    stop = threading.Event()
    errors: list[BaseException] = []

    def ticks() -> None:
        minute = 0
        while not stop.is_set() and minute < 200:
            minute += 1
            try:
                tick(start + timedelta(minutes=minute))
            except BaseException as exc:
                errors.append(exc)

    ticker = threading.Thread(target=ticks)
    ticker.start()
    paid = D(0)
    for _ in range(40):
        try:
            with session_scope() as session:
                payouts.request_payout(session, user_id=host.id, amount=D("0.5"), settings=free)
            paid += D("0.5")
        except Conflict:
            pass
    stop.set()
    ticker.join(timeout=120)
    assert errors == []
    assert paid > 0
    assert balance_of(host.id) >= 0
    report = invariants()
    assert report["ok"], report["differences"]


def test_another_users_payout_is_not_found(client, make_user):
    host = make_user(balance="10")
    stranger = make_user()
    payout_id = client.post(PAYOUTS, json={"amount": "1"}, headers=host.headers).json["id"]
    assert client.get(f"{PAYOUTS}/{payout_id}", headers=stranger.headers).status_code == 404
    assert client.get(f"{PAYOUTS}/{uuid.uuid4()}", headers=host.headers).status_code == 404
    assert client.get(PAYOUTS, headers=stranger.headers).json["items"] == []


def test_a_non_admin_cannot_approve_or_reject_a_payout(client, make_user, admin):
    host = make_user(balance="10")
    payout_id = client.post(PAYOUTS, json={"amount": "1"}, headers=host.headers).json["id"]
    for who in (host, make_user()):
        assert client.post(f"{PAYOUTS}/{payout_id}/approve", headers=who.headers).status_code == 403
        rejected = client.post(
            f"{PAYOUTS}/{payout_id}/reject", json={"reason": "mine"}, headers=who.headers
        )
        assert rejected.status_code == 403
    assert client.post(f"{PAYOUTS}/{payout_id}/approve").status_code == 401
    assert client.get(f"{PAYOUTS}/{payout_id}", headers=host.headers).json["status"] == "requested"
    missing = client.post(f"{PAYOUTS}/{uuid.uuid4()}/approve", headers=admin.headers)
    assert missing.status_code == 404


def test_an_admin_decides_payouts_on_the_ops_page(client, make_user, admin, invariants):
    host = make_user(balance="10")
    first = client.post(PAYOUTS, json={"amount": "1"}, headers=host.headers).json["id"]
    second = client.post(PAYOUTS, json={"amount": "2"}, headers=host.headers).json["id"]
    page = client.get("/ops/queues", headers=admin.headers)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"/ops/payouts/{first}/approve" in html and f"/ops/payouts/{second}/reject" in html
    json_headers = {**admin.headers, "Accept": "application/json"}
    approved = client.post(f"/ops/payouts/{first}/approve", headers=json_headers)
    assert approved.status_code == 200 and approved.json["status"] == "approved"
    no_reason = client.post(f"/ops/payouts/{second}/reject", headers=json_headers)
    assert no_reason.status_code == 422
    rejected = client.post(
        f"/ops/payouts/{second}/reject", data={"reason": "duplicate"}, headers=json_headers
    )
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    assert client.post(f"/ops/payouts/{first}/approve", headers=host.headers).status_code == 404
    assert balance_of(host.id) == D("9.0000")
    assert invariants()["ok"], invariants()["differences"]


def test_earnings_show_gross_fee_and_net_by_node_and_period(client, make_user, t0, tick):
    host = make_user()
    node_a = _earn(host.id, t0, tick, hours=2)  # 72 gross: 7.2 fee, 64.8 net
    node_b = _earn(host.id, t0, tick, hours=1, price="10")  # 10 gross: 1 fee, 9 net
    response = client.get("/api/v1/billing/earnings?every=day", headers=host.headers)
    assert response.status_code == 200, response.json
    items = response.json["items"]
    by_node = {item["node_id"]: item for item in items}
    assert by_node[str(node_a)] == {
        "period": by_node[str(node_a)]["period"],
        "node_id": str(node_a),
        "gross": "72.0000",
        "fee": "7.2000",
        "net": "64.8000",
    }
    assert (by_node[str(node_b)]["gross"], by_node[str(node_b)]["fee"]) == ("10.0000", "1.0000")
    assert by_node[str(node_b)]["net"] == "9.0000"
    monthly = client.get("/api/v1/billing/earnings?every=month", headers=host.headers).json
    assert sum(D(i["net"]) for i in monthly["items"]) == D("73.8000")
    assert all(i["period"].endswith("-01") for i in monthly["items"])
    other = client.get("/api/v1/billing/earnings", headers=make_user().headers)
    assert other.json == {"items": [], "next_cursor": None}
    future = client.get(
        "/api/v1/billing/earnings",
        query_string={"since": "2999-01-01T00:00:00Z"},
        headers=host.headers,
    )
    assert future.json["items"] == []
    assert (
        client.get("/api/v1/billing/earnings?every=year", headers=host.headers).status_code == 422
    )


def test_earnings_are_paged_by_period_newest_first(client, make_user, t0, tick):
    host = make_user()
    _earn(host.id, t0, tick, hours=1)
    _age_earnings(host.id, 3)
    _earn(host.id, t0, tick, hours=1)
    first = client.get("/api/v1/billing/earnings?every=day&limit=1", headers=host.headers).json
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = client.get(
        "/api/v1/billing/earnings",
        query_string={"every": "day", "limit": 1, "cursor": first["next_cursor"]},
        headers=host.headers,
    ).json
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    assert second["items"][0]["period"] < first["items"][0]["period"]
