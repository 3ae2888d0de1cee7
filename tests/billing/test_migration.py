"""The per-second migration on a database filled by per-minute billing: no balance moves, every
invariant holds, and billing goes on from the old watermarks without charging a second twice."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.billing import audit, service
from app.billing.rules import amount_for_minutes, amount_for_seconds, fee_for
from app.db import utcnow
from tests.conftest import PG_BASE, SLOT
from tests.dbutil import admin_execute
from tests.procs import ROOT

D = Decimal
DB_NAME = f"dc_test_billing_migr_{SLOT}"
URL = f"{PG_BASE}/{DB_NAME}".replace("postgresql://", "postgresql+psycopg2://")
REVISION = "0008"


def _alembic(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": URL},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def old_database():
    """A database at the revision before per-second billing."""
    admin_execute(DB_NAME, f'DROP DATABASE IF EXISTS "{DB_NAME}"', f'CREATE DATABASE "{DB_NAME}"')
    previous = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_revision(REVISION)
    assert previous is not None
    _alembic("upgrade", str(previous.down_revision))
    engine = create_engine(URL)
    yield engine
    engine.dispose()
    admin_execute(DB_NAME, f'DROP DATABASE IF EXISTS "{DB_NAME}"')


def _user(conn, clerk: str) -> uuid.UUID:
    return conn.execute(
        text(
            "INSERT INTO users (id, clerk_id, balance) VALUES (gen_random_uuid(), :c, 0) "
            "RETURNING id"
        ),
        {"c": clerk},
    ).scalar_one()


def _line(conn, user_id, amount, type_, kind, *, rental_id=None, charge_id=None) -> None:
    conn.execute(
        text(
            "INSERT INTO transactions (id, user_id, amount, type, kind, reference_id, rental_id, "
            "charge_id) VALUES (gen_random_uuid(), :u, :a, CAST(:t AS transaction_type), :k, "
            ":ref, :r, :c)"
        ),
        {
            "u": user_id,
            "a": amount,
            "t": type_,
            "k": kind,
            "ref": f"old-{uuid.uuid4()}",
            "r": rental_id,
            "c": charge_id,
        },
    )
    sign = 1 if type_ == "credit" else -1
    conn.execute(
        text("UPDATE users SET balance = balance + :d WHERE id = :u"),
        {"d": sign * D(amount), "u": user_id},
    )


def _old_charges(conn, rental, renter, host, platform, price, cuts, start, balance) -> D:
    """Per-minute charges as the old tick wrote them: a chain of periods, three lines each, and
    the rental's watermark; what the balance did not cover is not charged. Returns the paid."""
    paid = D(0)
    for after, upto in zip([0, *cuts], cuts, strict=False):
        nominal = amount_for_minutes(price, upto) - amount_for_minutes(price, after)
        amount = min(nominal, balance - paid)
        fee = fee_for(amount, D(10))
        charge = conn.execute(
            text(
                "INSERT INTO billing_charges (id, rental_id, renter_id, host_id, from_minute, "
                "to_minute, nominal, amount, fee, billed_until) VALUES (gen_random_uuid(), :r, "
                ":u, :h, :a, :b, :n, :m, :f, :until) RETURNING id"
            ),
            {
                "r": rental,
                "u": renter,
                "h": host,
                "a": after,
                "b": upto,
                "n": nominal,
                "m": amount,
                "f": fee,
                "until": start + timedelta(minutes=upto, seconds=-30),
            },
        ).scalar_one()
        for user_id, value, type_, kind in (
            (renter, amount, "debit", "usage"),
            (host, amount - fee, "credit", "earning"),
            (platform, fee, "credit", "fee"),
        ):
            if value > 0:
                _line(conn, user_id, value, type_, kind, rental_id=rental, charge_id=charge)
        paid += amount
    conn.execute(
        text("UPDATE rentals SET billed_minutes = :m, billed_amount = :a WHERE id = :r"),
        {"m": cuts[-1] if cuts else 0, "a": paid, "r": rental},
    )
    return paid


def test_the_migration_keeps_every_balance_and_billing_goes_on_from_the_old_watermark(
    old_database, settings
):
    start = (utcnow() - timedelta(hours=2)).replace(microsecond=0)
    price = D("1.2345")
    with old_database.begin() as conn:
        platform = _user(conn, "system:platform")
        host = _user(conn, "old_host")
        renters = [_user(conn, f"old_renter_{i}") for i in range(4)]
        for i, renter in enumerate(renters):
            _line(conn, renter, D("50") if i != 2 else D("0.03"), "credit", "topup")
        node = conn.execute(
            text(
                "INSERT INTO host_nodes (id, owner_id, name, specs, pricing, location, status, "
                "last_seen_at) VALUES (gen_random_uuid(), :o, 'old', "
                '\'{"gpu_model": "RTX 4090", "gpu_count": 1, "gpu_vram_gb": 24, '
                '"tflops": 82.6, "cpu_cores": 16, "ram_gb": 64, "disk_gb": 1000}\', '
                '\'{"hourly_rate": "1.2345"}\', \'{"country": "US"}\', \'busy\', now()) '
                "RETURNING id"
            ),
            {"o": host},
        ).scalar_one()
        rentals = []
        for i, (status, started, ended) in enumerate(
            [
                ("active", start, None),  # billed 61 minutes in three charges, still running
                ("completed", start, start + timedelta(minutes=40)),
                ("completed", start, start + timedelta(minutes=20)),  # the renter ran short
                ("cancelled", None, None),  # never started
            ]
        ):
            rentals.append(
                conn.execute(
                    text(
                        "INSERT INTO rentals (id, renter_id, node_id, status, image, "
                        "cost_per_hour, start_time, end_time) VALUES (gen_random_uuid(), :u, "
                        ":n, :s, 'busybox', :p, :st, :e) RETURNING id"
                    ),
                    {
                        "u": renters[i],
                        "n": node,
                        "s": status,
                        "p": price,
                        "st": started,
                        "e": ended,
                    },
                ).scalar_one()
            )
        paid_active = _old_charges(
            conn, rentals[0], renters[0], host, platform, price, [1, 30, 61], start, D(50)
        )
        _old_charges(conn, rentals[1], renters[1], host, platform, price, [20, 40], start, D(50))
        _old_charges(conn, rentals[2], renters[2], host, platform, price, [5, 20], start, D("0.03"))
        before = dict(conn.execute(text("SELECT id, balance FROM users")).all())
        lines_before = conn.execute(text("SELECT count(*) FROM transactions")).scalar_one()
    assert paid_active == amount_for_minutes(price, 61)

    _alembic("upgrade", REVISION)

    with Session(bind=old_database) as session:
        assert dict(session.execute(text("SELECT id, balance FROM users")).all()) == before
        assert session.execute(text("SELECT count(*) FROM transactions")).scalar_one() == (
            lines_before
        )
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]
        accruals = {
            row.rental_id: row
            for row in session.execute(text("SELECT * FROM rental_accruals")).mappings()
        }
        assert set(accruals) == set(rentals[:3])  # the cancelled rental never started
        short = accruals[rentals[2]]
        assert (short["billed_amount"], short["posted_amount"]) == (D("0.03"), D("0.03"))
        assert short["waived_amount"] == amount_for_minutes(price, 20) - D("0.03")

        # The old tick billed the 61st minute ahead; the new one charges from there on.
        now = start + timedelta(minutes=60, seconds=10)
        run = service.bill_active_rentals(session, now=now, settings=settings)
        session.commit()
        assert run.charged == 0  # 3610 seconds are inside the 61 minutes already paid
        run = service.bill_active_rentals(
            session, now=start + timedelta(minutes=75, seconds=4), settings=settings
        )
        session.commit()
        assert run.charged == 1
        active = (
            session.execute(
                text("SELECT * FROM rental_accruals WHERE rental_id = :r"), {"r": rentals[0]}
            )
            .mappings()
            .one()
        )
        assert active["billed_seconds"] == 75 * 60 + 4
        assert active["billed_amount"] == amount_for_seconds(price, 75 * 60 + 4)
        renter_balance = session.execute(
            text("SELECT balance FROM users WHERE id = :u"), {"u": renters[0]}
        ).scalar_one()
        assert renter_balance == D(50) - amount_for_seconds(price, 75 * 60 + 4)
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]
