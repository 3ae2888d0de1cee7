"""Billing over HTTP: top-ups, balance, the ledger, the invariants report and bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app.billing.models import Transaction
from app.db import session_scope
from tests.billing.factory import create_party

CREDITS = "/api/v1/billing/credits"


def _lines() -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(Transaction)).scalar_one()


def test_an_admin_top_up_credits_the_user_once(client, admin, user):
    body = {"user_id": str(user.id), "amount": "25.5000", "reference": "pay_123"}
    response = client.post(CREDITS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.json
    line = response.json
    assert line["amount"] == "25.5000" and line["type"] == "credit" and line["kind"] == "topup"
    assert line["reference_id"] == "pay_123"
    again = client.post(CREDITS, json=body, headers=admin.headers)
    assert again.status_code == 200
    assert again.json == line
    balance = client.get("/api/v1/billing/balance", headers=user.headers)
    assert balance.json == {"balance": "25.5000"}
    assert _lines() == 1


def test_the_same_reference_with_another_amount_or_user_is_a_conflict(
    client, admin, user, other_user
):
    body = {"user_id": str(user.id), "amount": "5", "reference": "pay_9"}
    assert client.post(CREDITS, json=body, headers=admin.headers).status_code == 201
    changed = client.post(CREDITS, json={**body, "amount": "6"}, headers=admin.headers)
    assert changed.status_code == 409, changed.json
    other = client.post(
        CREDITS, json={**body, "user_id": str(other_user.id)}, headers=admin.headers
    )
    assert other.status_code == 409
    assert _lines() == 1


def test_an_idempotency_key_replays_the_first_answer(client, admin, user):
    headers = {**admin.headers, "Idempotency-Key": "k-1"}
    body = {"user_id": str(user.id), "amount": "1.0000", "reference": "pay_k"}
    first = client.post(CREDITS, json=body, headers=headers)
    second = client.post(CREDITS, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    reused = client.post(CREDITS, json={**body, "reference": "pay_other"}, headers=headers)
    assert reused.status_code == 409
    assert _lines() == 1


def test_a_top_up_by_a_non_admin_is_forbidden_and_writes_nothing(client, user):
    body = {"user_id": str(user.id), "amount": "100", "reference": "self-service"}
    response = client.post(CREDITS, json=body, headers=user.headers)
    assert response.status_code == 403
    assert response.json["code"] == 403
    assert client.post(CREDITS, json=body).status_code == 401
    assert _lines() == 0


@pytest.mark.parametrize(
    "amount",
    [
        "-5",
        "0",
        "0.0000",
        "abc",
        "1.23456",
        1.5,
        None,
        True,
        "NaN",
        "Infinity",
        "",
        "1000000001",
        [],
        {},
    ],
)
def test_a_bad_amount_is_a_422_and_writes_nothing(client, admin, user, amount):
    body = {"user_id": str(user.id), "amount": amount, "reference": f"bad-{amount}"}
    response = client.post(CREDITS, json=body, headers=admin.headers)
    assert response.status_code == 422, (amount, response.json)
    assert "amount" in response.json["errors"]
    assert _lines() == 0


@pytest.mark.parametrize(
    "change",
    [
        {"reference": ""},
        {"reference": " padded "},
        {"reference": "x" * 256},
        {"user_id": "not-a-uuid"},
        {"reference": None},
        {"unknown": 1},
    ],
)
def test_other_bad_top_up_input_is_a_422(client, admin, user, change):
    body = {"user_id": str(user.id), "amount": "1", "reference": "ok", **change}
    response = client.post(CREDITS, json=body, headers=admin.headers)
    assert response.status_code == 422, response.json
    assert _lines() == 0


def test_a_top_up_for_an_unknown_user_is_404(client, admin):
    body = {"user_id": str(uuid.uuid4()), "amount": "1", "reference": "ghost"}
    assert client.post(CREDITS, json=body, headers=admin.headers).status_code == 404
    assert _lines() == 0


def test_a_body_that_is_not_json_is_a_400(client, admin):
    response = client.post(
        CREDITS, data="{", headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _lines() == 0


def test_the_ledger_is_paged_newest_first_and_shows_only_my_lines(client, admin, user, other_user):
    for i in range(5):
        body = {"user_id": str(user.id), "amount": f"{i + 1}", "reference": f"pay_{i}"}
        assert client.post(CREDITS, json=body, headers=admin.headers).status_code == 201
    client.post(
        CREDITS,
        json={"user_id": str(other_user.id), "amount": "9", "reference": "other"},
        headers=admin.headers,
    )
    seen = []
    cursor = None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(
            "/api/v1/billing/transactions", query_string=query, headers=user.headers
        ).json
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["reference_id"] for item in seen] == [f"pay_{i}" for i in reversed(range(5))]
    assert set(seen[0]) >= {"id", "amount", "type", "reference_id", "description", "created_at"}
    bad = client.get(
        "/api/v1/billing/transactions", query_string={"cursor": "bm9wZQ"}, headers=user.headers
    )
    assert bad.status_code == 422


def test_the_invariants_report_is_clean_after_billing_and_names_a_tampered_balance(
    client, admin, user, tick, t0
):
    party = create_party(price="6", start=t0)
    with session_scope() as session:
        session.execute(
            text("UPDATE rentals SET stop_requested_at = :at WHERE id = :r"),
            {"at": t0 + timedelta(minutes=70), "r": party.rental_id},
        )
    tick(t0 + timedelta(hours=1, seconds=30))  # the first hour is posted, with 30 seconds
    report = client.get("/api/v1/billing/invariants", headers=admin.headers)
    assert report.status_code == 200
    assert report.json["ok"] is True, report.json
    assert Decimal(report.json["totals"]["usage"]) == Decimal("6.05")
    # Owed since, until the stop request: 70 minutes cost 7.
    assert Decimal(report.json["totals"]["unposted_usage"]) == Decimal("0.95")
    assert Decimal(report.json["totals"]["uncovered_usage"]) == 0
    with session_scope() as session:
        session.execute(
            text("UPDATE users SET balance = balance + 0.0001 WHERE id = :u"),
            {"u": party.renter_id},
        )
    broken = client.get("/api/v1/billing/invariants", headers=admin.headers).json
    assert broken["ok"] is False
    checks = {d["check"] for d in broken["differences"]}
    assert "balance_matches_ledger" in checks
    assert client.get("/api/v1/billing/invariants", headers=user.headers).status_code == 403


def test_the_billing_check_command_exits_nonzero_on_a_difference(app, tick, t0):
    runner = app.test_cli_runner()
    party = create_party(price="6", start=t0)
    tick(t0 + timedelta(hours=1, seconds=5))
    assert runner.invoke(args=["billing-check"]).exit_code == 0
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE transactions SET amount = amount + 0.0001 "
                "WHERE rental_id = :r AND kind = 'earning'"
            ),
            {"r": party.rental_id},
        )
    result = runner.invoke(args=["billing-check"])
    assert result.exit_code == 1
    assert "accrual_matches_lines" in result.output


def test_every_reader_sees_the_balance_less_what_the_running_rentals_owe(
    client, user, admin, settings
):
    from app.auth.models import User
    from app.billing.payouts import available_for_payout
    from app.db import utcnow
    from app.errors import PaymentRequired
    from app.rentals.service import _check_balance
    from tests.billing.factory import make_party

    body = {"user_id": str(user.id), "amount": "10", "reference": "pay_derived"}
    assert client.post(CREDITS, json=body, headers=admin.headers).status_code == 201
    start = utcnow().replace(microsecond=0) - timedelta(minutes=20)
    with session_scope() as session:
        renter = session.get_one(User, user.id)
        party = make_party(session, price="6", renter=renter, start=start)
        # Asked to stop after ten minutes: the clock stands at 1.0000 owed, whenever we look.
        session.execute(
            text("UPDATE rentals SET stop_requested_at = :at WHERE id = :r"),
            {"at": start + timedelta(minutes=10), "r": party.rental_id},
        )
    balance = client.get("/api/v1/billing/balance", headers=user.headers).json
    assert balance == {"balance": "9.0000"}
    assert client.get("/api/v1/me", headers=user.headers).json["balance"] == "9.0000"
    rental = client.get(f"/api/v1/rentals/{party.rental_id}", headers=user.headers).json["rental"]
    assert (rental["cost_so_far"], rental["credit_minutes_left"]) == ("1.0000", 90)
    listed = client.get("/api/v1/rentals", headers=user.headers).json["items"]
    assert [(r["cost_so_far"], r["credit_minutes_left"]) for r in listed] == [("1.0000", 90)]
    with session_scope() as session:
        renter = session.get_one(User, user.id)
        assert renter.balance == Decimal(10)  # posted: nothing is written until a posting
        assert available_for_payout(session, user=renter, settings=settings) == Decimal(9)
        # Renting another node at 3.5000 needs an hour of both: 9.5000 > 9.0000.
        _check_balance(session, renter=renter, price=Decimal("3"), minutes=60)
        with pytest.raises(PaymentRequired, match=r"Your balance of 9\.0000"):
            _check_balance(session, renter=renter, price=Decimal("3.5"), minutes=60)
