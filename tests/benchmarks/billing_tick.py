"""Benchmark: the billing tick over N active rentals, against its floor.

Run: python -m tests.benchmarks.billing_tick [N ...]   (default: 10000 100000)

Uses its own database (dc_bench_billing_tick), rebuilt by the migrations for each N. For each N:
the first tick (rentals that started up to three hours ago, none posted yet: a backlog), three
steady one-minute ticks, and the floor: one bulk statement writing as many rows as a tick (as many
accrual rows and account rows updated, as many ledger rows inserted, naming a rental and a
posting as the tick's do, plus the watermark's row), committed. Then an hour of ticks, one a
minute, with the floor measured again after every fifth tick for that tick's rows: tick_s and
floor_s are the medians over that hour (the same minutes of this shared machine), printed with
their database CPU. The hour also counts every row each tick writes and the ledger rows written
per rental-hour. Ends with one line per N, then the load average:

    BENCH billing_tick rentals=N tick_s=… floor_s=… ratio=… rows_per_tick=… rows_per_rental_hour=…

rows_per_tick is the most rows any tick of the run wrote (accrual rows, ledger lines, account
balances and the tick's watermark row: everything), to compare with N.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "dc_bench_billing_tick"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
os.environ.update(
    {
        "APP_ENV": "test",
        "DC_NO_DOTENV": "1",
        "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+psycopg2://"
        )
        + f"/{DB_NAME}",
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "LOG_LEVEL": "WARNING",
    }
)

sys.path.insert(0, str(ROOT))  # run as a script: make `tests` importable

from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

SEED_SQL = """
WITH hosts AS (
    INSERT INTO users (id, clerk_id, balance)
    SELECT gen_random_uuid(), 'bench_host_' || g, 0 FROM generate_series(1, :hosts) g
    RETURNING id
), numbered_hosts AS (
    SELECT id, row_number() OVER () AS n FROM hosts
), renters AS (
    INSERT INTO users (id, clerk_id, balance)
    SELECT gen_random_uuid(), 'bench_renter_' || g, 1000 FROM generate_series(1, :n) g
    RETURNING id
), numbered_renters AS (
    SELECT id, row_number() OVER () AS n FROM renters
), topups AS (
    INSERT INTO transactions (id, user_id, amount, type, kind, reference_id)
    SELECT gen_random_uuid(), id, 1000, 'credit', 'topup', 'bench-' || id FROM renters
), nodes AS (
    INSERT INTO host_nodes (id, owner_id, name, specs, pricing, location, status, last_seen_at)
    SELECT gen_random_uuid(), h.id, 'bench-' || r.n,
           '{"gpu_model": "RTX 4090", "gpu_count": 1, "gpu_vram_gb": 24, "tflops": 82.6,
             "cpu_cores": 16, "ram_gb": 64, "disk_gb": 1000}'::jsonb,
           jsonb_build_object('hourly_rate', (0.1 + random() * 4)::numeric(18, 4)::text),
           '{"country": "US"}'::jsonb, 'busy', now()
    FROM numbered_renters r JOIN numbered_hosts h ON h.n = 1 + (r.n % :hosts)
    RETURNING id, owner_id, hourly_rate
), numbered_nodes AS (
    SELECT id, hourly_rate, row_number() OVER () AS n FROM nodes
)
INSERT INTO rentals (id, renter_id, node_id, status, image, cost_per_hour, start_time)
SELECT gen_random_uuid(), r.id, nd.id, 'active', 'localhost/busybox:latest', nd.hourly_rate,
       now() - random() * interval '3 hours'
FROM numbered_renters r JOIN numbered_nodes nd ON nd.n = r.n
"""

# Every node has a status history; one in ten went offline for ten minutes during its rental.
HISTORY_SQL = """
INSERT INTO node_status_events (node_id, status, at, reason)
SELECT r.node_id, s.status, s.at, 'bench'
FROM rentals r
CROSS JOIN LATERAL (VALUES
    (CAST('online' AS node_status), r.start_time - interval '1 hour'),
    (CAST('busy' AS node_status), r.start_time),
    (CAST('offline' AS node_status), r.start_time + interval '1 minute'),
    (CAST('busy' AS node_status), r.start_time + interval '11 minutes')) AS s(status, at)
WHERE s.status <> 'offline' AND s.at < r.start_time + interval '1 minute'
   OR (get_byte(uuid_send(r.id), 0) < 26 AND s.at < now())
"""


def rebuild_database() -> None:
    from tests.dbutil import recreate_database

    recreate_database(DB_NAME)


def _backend_cpu(pid: int) -> float:
    """CPU seconds a PostgreSQL backend has used (user + system): immune to other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FLOOR_SQL = """
WITH accruals AS (
    UPDATE rental_accruals a SET billed_until = a.billed_until
    WHERE a.rental_id IN (SELECT rental_id FROM rental_accruals ORDER BY rental_id
                          LIMIT :accruals)
    RETURNING a.rental_id
), accounts AS (
    UPDATE users u SET balance = u.balance
    WHERE u.id IN (SELECT id FROM users ORDER BY id LIMIT :balances)
    RETURNING u.id
), lines AS (
    -- Ledger rows as a posting writes them: each names its rental and posting number (the same
    -- foreign keys checked, the same indexes written).
    INSERT INTO transactions (id, user_id, amount, type, kind, reference_id, rental_id, posting)
    SELECT gen_random_uuid(), r.renter_id, 0.0001, 'credit', 'adjustment', 'bench-floor', r.id,
           1000000 + g
    FROM rentals r CROSS JOIN generate_series(1, 3) g
    LIMIT :lines
    RETURNING id
)
SELECT (SELECT count(*) FROM accruals) + (SELECT count(*) FROM accounts)
       + (SELECT count(*) FROM lines)
"""


def _ledger_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM transactions WHERE kind IN ('usage', 'earning', 'fee')")
        ).scalar_one()


def run(n: int) -> str:
    from app import db
    from app.billing import audit, service
    from app.billing.service import BillingRun
    from app.config import get_settings
    from app.db import session_scope, utcnow

    rebuild_database()
    engine = db.configure(os.environ["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text(SEED_SQL), {"n": n, "hosts": max(1, n // 5)})
        conn.execute(text(HISTORY_SQL))
        conn.execute(text("ANALYZE"))
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement.split(None, 1)[0].upper())

    settings = get_settings()
    base = utcnow()
    print(f"N={n:>6}  load average before: {_load()}")

    def tick(label: str, at, *, quiet: bool = False) -> tuple[float, float, BillingRun]:
        with engine.connect() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            statements.clear()
            cpu_before = _backend_cpu(backend)
            started = time.perf_counter()
            with Session(bind=conn) as session:
                run_ = service.bill_active_rentals(session, now=at, settings=settings)
                session.commit()
            elapsed = time.perf_counter() - started
            cpu = _backend_cpu(backend) - cpu_before
        if not quiet:
            print(
                f"N={n:>6}  {label:<36} {elapsed:6.3f} s wall, {cpu:6.3f} s database CPU, "
                f"{len(statements)} SQL statements; looked at {run_.looked}, priced "
                f"{run_.priced}; rows written: {run_.rows_written} ({run_.written} accruals, "
                f"{run_.lines} ledger lines, {run_.balances} balances, {run_.watermarks} "
                f"watermark); {run_.charged} postings, {run_.total} posted"
            )
        return elapsed, cpu, run_

    def floor(like: BillingRun) -> tuple[float, float, int]:
        """One statement writing as many rows as the tick `like` did, committed."""
        with engine.connect() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            cpu_before = _backend_cpu(backend)
            started = time.perf_counter()
            written = conn.execute(
                text(FLOOR_SQL),
                {
                    "accruals": like.written,
                    "balances": like.balances,
                    # The ledger lines, and the watermark's row as one more.
                    "lines": like.lines + like.watermarks,
                },
            ).scalar_one()
            conn.commit()
            elapsed = time.perf_counter() - started
            cpu = _backend_cpu(backend) - cpu_before
            # Not timed: the floor's ledger rows go again (they moved no balance).
            conn.execute(text("DELETE FROM transactions WHERE reference_id = 'bench-floor'"))
            conn.commit()
        assert written == like.rows_written, (written, like.rows_written)
        return elapsed, cpu, written

    first_s, _, first = tick("first tick (3 hours of backlog)", base)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    steady = [tick(f"steady tick, +{m} min", base + timedelta(minutes=m)) for m in (1, 2, 3)]
    floors = [floor(steady[-1][2]) for _ in range(3)]
    print(
        f"N={n:>6}  floor: one statement writing {floors[0][2]} rows (the last tick wrote "
        f"{steady[-1][2].rows_written}), committed: "
        f"{statistics.median(f[0] for f in floors):.3f} s wall, "
        f"{statistics.median(f[1] for f in floors):.3f} s database CPU"
    )

    # An hour of ticks, one a minute as the scheduler sends them: every row each one writes, the
    # ledger rows written per rental-hour, and after every fifth tick the floor for that tick's
    # rows, so that ticks and floors are measured over the same hour of this shared machine.
    before = _ledger_rows(engine)
    hour, hour_floors = [], []
    for m in range(1, 61):
        hour.append(tick("", base + timedelta(minutes=3 + m), quiet=True))
        if m % 5 == 0:
            hour_floors.append(floor(hour[-1][2]))
    per_rental_hour = (_ledger_rows(engine) - before) / n
    rows = [r.rows_written for _, _, r in hour]
    rows_per_tick = max([first.rows_written, *rows, *(r.rows_written for _, _, r in steady)])
    tick_s = statistics.median(t for t, _, _ in hour)
    floor_s = statistics.median(t for t, _, _ in hour_floors)
    tick_cpu = statistics.median(c for _, c, _ in hour)
    floor_cpu = statistics.median(c for _, c, _ in hour_floors)
    print(
        f"N={n:>6}  hour of ticks (60): wall median {tick_s:.3f} s, max "
        f"{max(t for t, _, _ in hour):.3f} s, database CPU median {tick_cpu:.3f} s; rows "
        f"written median {statistics.median(rows):.0f}, max {max(rows)} "
        f"({max(rows) / n:.3f} per rental); postings {sum(r.charged for _, _, r in hour)}"
    )
    print(
        f"N={n:>6}  floors in that hour (12): wall median {floor_s:.3f} s, database CPU median "
        f"{floor_cpu:.3f} s; ratio wall {tick_s / floor_s:.2f}, database CPU "
        f"{tick_cpu / floor_cpu:.2f}"
    )
    print(
        f"N={n:>6}  first tick {first_s:.3f} s = {first_s / tick_s:.2f}x a tick of the hour, "
        f"{first.rows_written} rows"
    )
    with session_scope() as session:
        report = audit.check_invariants(session)
    print(f"N={n:>6}  invariants ok: {report['ok']}; load average after: {_load()}")
    event.remove(engine, "before_cursor_execute", _count)
    engine.dispose()
    return (
        f"BENCH billing_tick rentals={n} tick_s={tick_s:.3f} floor_s={floor_s:.3f} "
        f"ratio={tick_s / floor_s:.2f} rows_per_tick={rows_per_tick} "
        f"rows_per_rental_hour={per_rental_hour:.2f}"
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10000, 100000]
    lines = [run(n) for n in sizes]
    for line in lines:
        print(line)
    print(f"load average: {_load()}")


if __name__ == "__main__":
    main()
