"""Benchmark: one billing tick over N active rentals; prints its time and SQL statement count.

Run: python -m tests.benchmarks.billing_tick [N ...]   (default: 1000 10000)

Uses its own database (dc_bench_billing_tick), rebuilt by the migrations for each N. The count
of statements must not grow with N: the tick is set-based.
"""

from __future__ import annotations

import os
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


def run(n: int) -> None:
    from app import db
    from app.billing import audit, service
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
    ticks = (
        ("first tick (up to 3 h of minutes per rental)", 0, False),
        ("next tick, one minute later (stale statistics)", 60, False),
        ("next tick after ANALYZE (as autovacuum keeps)", 120, True),
    )
    for label, offset, analyze in ticks:
        if analyze:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        with engine.connect() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            statements.clear()
            cpu_before = _backend_cpu(backend)
            started = time.perf_counter()
            with Session(bind=conn) as session:
                run_ = service.bill_active_rentals(
                    session, now=utcnow() + timedelta(seconds=offset), settings=settings
                )
                session.commit()
            elapsed = time.perf_counter() - started
            cpu = _backend_cpu(backend) - cpu_before
        print(
            f"N={n:>6}  {label:<48} {elapsed:6.3f} s wall, {cpu:6.3f} s database CPU, "
            f"{len(statements)} SQL statements ({', '.join(statements)}); charged "
            f"{len(run_.charges)} rentals, {run_.total} in total"
        )
    with session_scope() as session:
        report = audit.check_invariants(session)
    print(f"N={n:>6}  invariants ok: {report['ok']}")
    event.remove(engine, "before_cursor_execute", _count)
    engine.dispose()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    for n in sizes:
        run(n)


if __name__ == "__main__":
    main()
