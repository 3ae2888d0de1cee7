"""The billing migrations on databases filled by the code before them: no balance moves, every
invariant holds, and billing goes on from the old watermarks without charging a second twice.

0008 (per-second billing) on a database filled by per-minute billing; 0015 (derived balances) on
one filled by the per-second billing run of revision 0013 (tests/billing/old_billing_0013.py).
"""

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

from app.billing import accrued, audit, service
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
def database_before():
    """database_before(revision) -> engine: a database at the revision before `revision`."""
    engines = []

    def _make(revision: str):
        admin_execute(
            DB_NAME, f'DROP DATABASE IF EXISTS "{DB_NAME}"', f'CREATE DATABASE "{DB_NAME}"'
        )
        script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
        previous = script.get_revision(revision)
        assert previous is not None
        _alembic("upgrade", str(previous.down_revision))
        engines.append(create_engine(URL))
        return engines[-1]

    yield _make
    for engine in engines:
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
    database_before, settings
):
    old_database = database_before(REVISION)
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
        accruals = {
            row.rental_id: row
            for row in session.execute(text("SELECT * FROM rental_accruals")).mappings()
        }
        assert set(accruals) == set(rentals[:3])  # the cancelled rental never started
        short = accruals[rentals[2]]
        assert (short["billed_amount"], short["posted_amount"]) == (D("0.03"), D("0.03"))
        assert short["waived_amount"] == amount_for_minutes(price, 20) - D("0.03")
        assert accruals[rentals[0]]["posted_until"] == start + timedelta(hours=1)

    # Today's code runs on today's schema: the later revisions go on from there.
    _alembic("upgrade", "head")
    with Session(bind=old_database) as session:
        assert dict(session.execute(text("SELECT id, balance FROM users")).all()) == before
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]

        # The old tick billed the 61st minute ahead; billing goes on from there.
        now = start + timedelta(minutes=60, seconds=10)
        run = service.bill_active_rentals(session, now=now, settings=settings)
        session.commit()
        assert run.charged == 0  # 3610 seconds are inside the 61 minutes already paid
        assert accrued.balance_of(session, renters[0], now=now) == D(50) - paid_active
        later = start + timedelta(minutes=75, seconds=4)
        assert accrued.balance_of(session, renters[0], now=later) == D(50) - amount_for_seconds(
            price, 75 * 60 + 4
        )
        # The next hour mark posts the seconds since the old watermark.
        run = service.bill_active_rentals(
            session, now=start + timedelta(hours=2, seconds=5), settings=settings
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
        assert active["billed_seconds"] == 2 * 3600 + 5
        assert active["billed_amount"] == amount_for_seconds(price, 2 * 3600 + 5)
        renter_balance = session.execute(
            text("SELECT balance FROM users WHERE id = :u"), {"u": renters[0]}
        ).scalar_one()
        assert renter_balance == D(50) - amount_for_seconds(price, 2 * 3600 + 5)
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]


DERIVED = "0015"
NODE_SPECS = (
    '{"gpu_model": "RTX 4090", "gpu_count": 1, "gpu_vram_gb": 24, "tflops": 82.6, '
    '"cpu_cores": 16, "ram_gb": 64, "disk_gb": 1000}'
)


def _node(conn, owner, *, status: str = "busy", last_seen=None) -> uuid.UUID:
    return conn.execute(
        text(
            "INSERT INTO host_nodes (id, owner_id, name, specs, pricing, location, status, "
            "last_seen_at) VALUES (gen_random_uuid(), :o, 'old', CAST(:specs AS jsonb), "
            '\'{"hourly_rate": "1"}\', \'{"country": "US"}\', CAST(:s AS node_status), '
            "COALESCE(:seen, now())) RETURNING id"
        ),
        {"o": owner, "specs": NODE_SPECS, "s": status, "seen": last_seen},
    ).scalar_one()


def _rental(conn, renter, node, price, start) -> uuid.UUID:
    return conn.execute(
        text(
            "INSERT INTO rentals (id, renter_id, node_id, status, image, cost_per_hour, "
            "start_time) VALUES (gen_random_uuid(), :u, :n, 'active', 'busybox', :p, :st) "
            "RETURNING id"
        ),
        {"u": renter, "n": node, "p": D(price), "st": start},
    ).scalar_one()


def _balances(conn) -> dict:
    return dict(conn.execute(text("SELECT id, balance FROM users")).all())


def _usage(conn, rental_id) -> D:
    return conn.execute(
        text(
            "SELECT COALESCE(SUM(amount), 0) FROM transactions "
            "WHERE rental_id = :r AND kind = 'usage'"
        ),
        {"r": rental_id},
    ).scalar_one()


def test_the_derived_balances_migration_posts_what_was_billed_and_moves_no_balance(
    database_before, settings
):
    import app.models  # noqa: F401  (every table, for the ORM's foreign keys)
    from app.enums import RentalStatus
    from app.rentals.models import Rental
    from tests.billing.old_billing_0013 import old_run

    engine = database_before(DERIVED)
    fee_percent = settings.platform_fee_percent
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    t1 = start + timedelta(hours=1, seconds=10)
    t2 = start + timedelta(hours=1, minutes=40)
    with engine.begin() as conn:
        _user(conn, "system:platform")
        host = _user(conn, "old_host")
        rich, poor, quitter, stranded = (_user(conn, f"old_renter_{i}") for i in range(4))
        for renter, amount in ((rich, "50"), (poor, "0.05"), (quitter, "50"), (stranded, "50")):
            _line(conn, renter, D(amount), "credit", "topup")
        running = _rental(conn, rich, _node(conn, host), "1.2345", start)
        short = _rental(conn, poor, _node(conn, host), "6", start + timedelta(hours=1))
        ended = _rental(conn, quitter, _node(conn, host), "2.5", start)
        offline = _node(conn, host, status="offline", last_seen=start + timedelta(minutes=20))
        stalled = _rental(conn, stranded, offline, "3.3", start)

    # The old code at work: a tick that posts the first hours, one rental ended and settled as the
    # old rentals domain did, then a tick that leaves 40 minutes billed and not posted.
    with engine.begin() as conn:
        old_run(conn, until=t1, fee_percent=fee_percent)
    end = start + timedelta(hours=1, minutes=20)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE rentals SET status = 'completed', end_time = :e WHERE id = :r"),
            {"e": end, "r": ended},
        )
        old_run(conn, until=end, final=True, rental_id=ended, fee_percent=fee_percent)
        conn.execute(
            text(
                "UPDATE rentals r SET billed_amount = a.billed_amount, billed_minutes = "
                "CEIL(a.billed_seconds / 60.0) FROM rental_accruals a "
                "WHERE a.rental_id = r.id AND r.id = :r"
            ),
            {"r": ended},
        )
    with engine.begin() as conn:
        old_run(conn, until=t2, fee_percent=fee_percent)
        before = _balances(conn)
        lines_before = conn.execute(text("SELECT count(*) FROM transactions")).scalar_one()
        unposted = dict(
            conn.execute(
                text(
                    "SELECT rental_id, billed_amount - posted_amount FROM rental_accruals "
                    "WHERE billed_amount <> posted_amount"
                )
            ).all()
        )
    # What the old code left: the running rental's 40 minutes and the short renter's 0.05 billed
    # and not posted (balances moved already); the rest posted.
    assert set(unposted) == {running, short}
    assert unposted[short] == D("0.05")

    _alembic("upgrade", DERIVED)
    with Session(bind=engine) as session:
        assert _balances(session.connection()) == before
        # The unposted shares are posted: three lines each, which the balances already held.
        lines = session.execute(text("SELECT count(*) FROM transactions")).scalar_one()
        assert lines == lines_before + 6
        columns = {
            row[0]
            for row in session.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'rental_accruals'"
                )
            )
        }
        assert not any(c.startswith("posted_") and c != "posted_until" for c in columns)
        assert session.execute(text("SELECT ticked_until FROM billing_watermark")).scalar() == t2
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]
        # At the old code's last tick, every balance seen is the old balance exactly.
        seen = accrued.balances(session, before, now=t2)
        assert seen == {user_id: D(balance) for user_id, balance in before.items()}
        assert _usage(session.connection(), running) == amount_for_seconds(D("1.2345"), 6000)

    # Down and up again: the old running totals are the posted figures; nothing moves.
    _alembic("downgrade", "0013")
    with engine.connect() as conn:
        assert _balances(conn) == before
        assert (
            conn.execute(
                text(
                    "SELECT count(*) FROM rental_accruals WHERE posted_amount <> billed_amount "
                    "OR posted_seconds <> billed_seconds OR posted_fee <> billed_fee"
                )
            ).scalar_one()
            == 0
        )
    _alembic("upgrade", DERIVED)

    # Billing goes on: the running rental's next hour mark posts the seconds since; the short
    # renter owes more than it has (waived, and stopped); everything ends and is exact.
    with Session(bind=engine) as session:
        mark = start + timedelta(hours=2, seconds=5)
        run = service.bill_active_rentals(session, now=mark, settings=settings)
        session.commit()
        assert run.to_stop == [short]
        assert _usage(session.connection(), running) == amount_for_seconds(D("1.2345"), 7205)
        for rental_id in (running, short, stalled):
            rental = session.get_one(Rental, rental_id)
            rental.status, rental.end_time = RentalStatus.COMPLETED, mark
            service.settle_rental(session, rental, mark)
        session.commit()
        connection = session.connection()
        assert _usage(connection, running) == amount_for_seconds(D("1.2345"), 7205)
        assert _usage(connection, short) == D("0.05")
        assert _usage(connection, ended) == amount_for_seconds(D("2.5"), 4800)
        assert _usage(connection, stalled) == amount_for_seconds(D("3.3"), 1200)
        waived = session.execute(
            text("SELECT billed_amount + waived_amount FROM rental_accruals WHERE rental_id = :r"),
            {"r": short},
        ).scalar_one()
        assert waived == amount_for_seconds(D("6"), 3605)
        fees = session.execute(
            text("SELECT rental_id, billed_amount, billed_fee FROM rental_accruals")
        ).all()
        assert all(fee == fee_for(amount, fee_percent) for _, amount, fee in fees)
        report = audit.check_invariants(session)
        assert report["ok"], report["differences"]
        assert report["totals"]["unposted_usage"] == "0.0000"
