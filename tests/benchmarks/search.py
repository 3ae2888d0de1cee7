"""Marketplace search benchmark: 10,000 nodes, five representative searches through HTTP.

    python -m tests.benchmarks.search [--nodes 10000] [--requests 400]

Builds its own database (dc_bench_search_<slot>) by running the migrations, bulk-inserts the nodes
and a week of status history, materialises reliability, then starts the API as production runs it
(gunicorn, gevent worker) and measures each search end to end through HTTP:

* uncached: the offers version is bumped before every request, so each one runs the query;
* cached: the same request again and again (the Redis cache answers), in rounds of 50 with
  GET /me, which it is compared with;
* SQL: the bare query the service builds for that search, over a plain psycopg2 connection
  (the floor: what the database alone costs).

Floors, measured in the same run: the bare SQL of each search, GET /me (the cheapest
authenticated request), and for GET /me itself a bare Flask route with the same JWT check under
the same gunicorn settings (tests/benchmarks/floors/jwt_server.py). Prints p50/p99 in
milliseconds, then the ratios (on p50; p99 beside them) with the load average, and one
machine-readable line per figure:

    BENCH me p50_ms=... p99_ms=... floor_p50_ms=... floor_p99_ms=... cpu_ms=... floor_cpu_ms=...
        cpu_ratio=... loadavg=... ratio=...
    BENCH search name=default uncached_p50_ms=... sql_p50_ms=... floor_p50_ms=... ... ratio=...

`--profile DIR` then runs GET /me, and its floor, in a loop for `--profile-seconds` each while
py-spy samples the worker, and prints where each spent its time; `--me-only` leaves out the
searches (with `--nodes 100`, a quick measure of GET /me alone).

Targets: GET /me within 2x its floor; cached search within 1.2x GET /me; uncached within 3x
its bare SQL plus the floor (and, in absolute terms, uncached p99 < 25 ms, cached p99 < 3 ms).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
SLOT = int(os.environ.get("DC_TEST_SLOT", "0"))


def bench_redis_db(slot: int) -> int:
    """The slot's spare Redis database (its tests use the first); slot 7 has one, shared."""
    return 2 + slot * 2 if slot < 7 else 15


DB_NAME = f"dc_bench_search_{SLOT}"  # per test slot: runs in other slots use their own
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{DB_NAME}"
ENV = {
    "APP_ENV": "test",
    "DC_NO_DOTENV": "1",
    "DATABASE_URL": PG_URL.replace("postgresql://", "postgresql+psycopg2://"),
    # The slot's second Redis database (the tests use the first).
    "REDIS_URL": os.environ.get(
        "BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{bench_redis_db(SLOT)}"
    ),
    "DEV_JWT_PRIVATE_KEY": str(ROOT / "var" / "test-jwt-key.pem"),
    "CLERK_ISSUER": "https://clerk.bench.localhost",
    "ADMIN_USER_IDS": "bench-admin",
    "LOG_LEVEL": "WARNING",
    "SEARCH_CACHE_TTL_SECONDS": "300",
}
os.environ.update(ENV)
for _key in ("CLERK_JWT_KEY", "CLERK_JWKS_URL", "CLERK_AUTHORIZED_PARTIES"):
    os.environ.pop(_key, None)
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402

from tests.profiling import record, top_functions, worker_pid  # noqa: E402

# (model, per-GPU price, VRAM GB, TFLOPS per GPU, weight)
GPUS = [
    ("RTX 4090", 0.40, 24, 82.6, 25),
    ("RTX 3090", 0.22, 24, 35.6, 15),
    ("RTX 4080", 0.25, 16, 48.7, 8),
    ("RTX 5090", 0.70, 32, 104.8, 6),
    ("RTX A6000", 0.45, 48, 38.7, 6),
    ("A100 80GB", 1.30, 80, 312, 8),
    ("A100 40GB", 0.90, 40, 312, 4),
    ("H100 80GB HBM3", 2.30, 80, 989, 6),
    ("H100 PCIe", 2.00, 80, 756, 3),
    ("L40S", 0.80, 48, 362, 5),
    ("L4", 0.40, 24, 121, 4),
    ("RTX 3080", 0.15, 10, 29.8, 5),
    ("V100", 0.25, 16, 125, 3),
    ("T4", 0.15, 16, 65, 3),
    ("none", 0.0, 0, 1.5, 3),
]
CITIES = [
    ("US", "New York", 40.71, -74.01),
    ("US", "Austin", 30.27, -97.74),
    ("US", "Seattle", 47.61, -122.33),
    ("US", "Chicago", 41.88, -87.63),
    ("US", "Los Angeles", 34.05, -118.24),
    ("US", "Ashburn", 39.04, -77.49),
    ("CA", "Toronto", 43.65, -79.38),
    ("CA", "Montreal", 45.50, -73.57),
    ("DE", "Berlin", 52.52, 13.40),
    ("DE", "Frankfurt", 50.11, 8.68),
    ("FR", "Paris", 48.86, 2.35),
    ("NL", "Amsterdam", 52.37, 4.90),
    ("GB", "London", 51.51, -0.13),
    ("SE", "Stockholm", 59.33, 18.07),
    ("PL", "Warsaw", 52.23, 21.01),
    ("FI", "Helsinki", 60.17, 24.94),
    ("JP", "Tokyo", 35.68, 139.69),
    ("KR", "Seoul", 37.57, 126.98),
    ("SG", "Singapore", 1.35, 103.82),
    ("IN", "Mumbai", 19.08, 72.88),
    ("AU", "Sydney", -33.87, 151.21),
    ("BR", "Sao Paulo", -23.55, -46.63),
    ("ZA", "Johannesburg", -26.20, 28.05),
    ("AE", "Dubai", 25.20, 55.27),
    ("TW", "Taipei", 25.03, 121.57),
    ("HK", "Hong Kong", 22.32, 114.17),
    ("RO", "Bucharest", 44.43, 26.10),
    ("ES", "Madrid", 40.42, -3.70),
    ("IT", "Milan", 45.46, 9.19),
    ("NO", "Oslo", 59.91, 10.75),
]
SLUGS = ["default", "gpu_model", "near", "q", "ram_tflops_page2", "per_gpu"]
SEARCHES: list[tuple[str, dict[str, str]]] = [
    ("default (relevance = price)", {}),
    (
        "gpu_model=4090, min_gpu_count=2, max_price",
        {"gpu_model": "4090", "min_gpu_count": "2", "max_price": "2.5", "sort": "price"},
    ),
    ("near NYC within 500 km", {"near": "40.71,-74.0", "max_distance_km": "500"}),
    (
        "q: vram>=48 price<10 country in [...] verified, by value",
        {
            "q": "gpu_vram_gb>=48 hourly_rate<10 country in [US,CA,DE,NL] verified=true",
            "sort": "value",
        },
    ),
    ("min_ram_gb=64, by tflops, 2nd page", {"min_ram_gb": "64", "sort": "tflops", "page": "2"}),
    ("2+ GPUs free now, by price per GPU", {"min_gpu_count": "2", "sort": "price_per_gpu"}),
]


def log(message: str) -> None:
    print(message, flush=True)


def create_database() -> None:
    from tests.dbutil import recreate_database

    recreate_database(DB_NAME)


def seed(conn, nodes: int, rng: random.Random) -> uuid.UUID:
    owner = uuid.uuid4()
    now = datetime.now(UTC)
    weights = [g[4] for g in GPUS]
    rows, events = [], []
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, clerk_id, email) VALUES (%s, 'bench-host', "
            "'host@bench.example')",
            (str(owner),),
        )
        for index in range(nodes):
            model, per_gpu, vram, tflops, _ = rng.choices(GPUS, weights)[0]
            count = 0 if model == "none" else rng.choice([1, 1, 1, 2, 2, 4, 8])
            cores = rng.choice([8, 16, 32, 64, 128])
            ram = rng.choice([32, 64, 128, 256, 512])
            if count:
                rate = per_gpu * count * rng.uniform(0.7, 1.5)
            else:
                rate = (0.02 * cores + 0.0025 * ram) * rng.uniform(0.7, 1.5)
            country, city, lat, lng = rng.choice(CITIES)
            roll = rng.random()
            status = (
                "online"
                if roll < 0.70
                else "busy"
                if roll < 0.85
                else "offline"
                if roll < 0.97
                else "maintenance"
            )
            # Several rentals per node: busy nodes have every GPU rented, and two in five
            # online multi-GPU nodes some of them.
            in_use = max(count, 1) if status == "busy" else 0
            if status == "online" and count >= 2 and rng.random() < 0.4:
                in_use = rng.randint(1, count - 1)
            node_id = uuid.uuid4()
            created = now - timedelta(days=rng.uniform(1, 60))
            rows.append(
                (
                    str(node_id),
                    str(owner),
                    f"node-{index}",
                    json.dumps(
                        {
                            "gpu_model": model,
                            "gpu_count": count,
                            "gpu_vram_gb": vram,
                            "tflops": round(tflops * max(count, 1), 1),
                            "cpu_cores": cores,
                            "ram_gb": ram,
                            "disk_gb": rng.choice([500, 1000, 2000, 4000]),
                        }
                    ),
                    json.dumps(
                        {
                            "hourly_rate": f"{max(rate, 0.01):.4f}",
                            "auto_match_market": rng.random() < 0.2,
                        }
                    ),
                    json.dumps(
                        {
                            "country": country,
                            "city": city,
                            "lat": round(lat + rng.uniform(-0.5, 0.5), 6),
                            "lng": round(lng + rng.uniform(-0.5, 0.5), 6),
                        }
                    ),
                    status,
                    status == "maintenance",
                    status == "online" and rng.random() < 0.03,
                    rng.random() < 0.3,
                    created,
                    in_use,
                )
            )
            # A week of history: a few flips between up and down.
            at = max(created, now - timedelta(days=8))
            flips = sorted(
                rng.uniform(at.timestamp(), now.timestamp()) for _ in range(rng.randint(2, 12))
            )
            for n, ts in enumerate(flips):
                events.append(
                    (
                        str(node_id),
                        "online" if n % 2 == 0 else "offline",
                        datetime.fromtimestamp(ts, UTC),
                    )
                )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO host_nodes (id, owner_id, name, specs, pricing, location, status, "
            "maintenance, draining, verified, created_at, gpus_in_use) VALUES %s",
            rows,
            page_size=1000,
        )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO node_status_events (node_id, status, at) VALUES %s",
            events,
            page_size=5000,
        )
    conn.commit()
    log(f"seeded {nodes} nodes and {len(events)} status events")
    return owner


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--me-only", action="store_true", help="measure GET /me and its floor, no searches"
    )
    parser.add_argument(
        "--profile", type=Path, help="folder for py-spy profiles of GET /me and of its floor"
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    options = parser.parse_args()
    rng = random.Random(7)

    create_database()
    conn = psycopg2.connect(PG_URL)
    seed(conn, options.nodes, rng)

    from app.auth.tokens import mint_dev_token
    from app.config import get_settings
    from app.db import session_scope
    from app.marketplace.cache import OFFERS_VERSION_KEY
    from app.marketplace.reliability import refresh_reliability
    from app.marketplace.schemas import OfferQueryArgsSchema
    from app.marketplace.service import build_search, parse_terms
    from app.redis_client import get_redis
    from tests.procs import Proc, api_server, free_port, wait_http

    started = time.perf_counter()
    with session_scope() as session:
        refresh_reliability(session)
    log(
        f"reliability job over {options.nodes} nodes: "
        f"{(time.perf_counter() - started) * 1000:.0f} ms"
    )
    with conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
        cur.execute(
            "SELECT count(*) FROM host_nodes WHERE status = 'online' AND NOT draining "
            "AND NOT maintenance"
        )
        log(f"offered nodes: {cur.fetchone()[0]}")

    settings = get_settings()
    started_load = os.getloadavg()[0]
    redis = get_redis()
    redis.flushdb()
    token = mint_dev_token(settings, "bench-renter", email="renter@bench.example")
    port = free_port()
    server = api_server(port, name="bench-search-api").start()
    floor_port = free_port()
    floor = Proc(
        "bench-search-floor",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "tests/benchmarks/floors/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{floor_port}",
            "tests.benchmarks.floors.jwt_server:app",
        ],
    ).start()
    headers = {"Authorization": f"Bearer {token}"}
    profiles: list[tuple[str, Path]] = []
    base = f"http://127.0.0.1:{port}/api/v1/offers"
    # A lean keep-alive client, so the figures are the server's and not the client library's.
    conn_http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        wait_http(base, proc=server)  # 401 without a token: the server is up

        def get(params: dict[str, str]) -> tuple[int, bytes]:
            conn_http.request("GET", "/api/v1/offers?" + urlencode(params), headers=headers)
            response = conn_http.getresponse()
            return response.status, response.read()

        def timed_path(path: str) -> float:
            begin = time.perf_counter()
            conn_http.request("GET", path, headers=headers)
            response = conn_http.getresponse()
            response.read()
            assert response.status == 200
            return (time.perf_counter() - begin) * 1000

        def params_of(spec: dict[str, str]) -> dict[str, str]:
            params = {k: v for k, v in spec.items() if k != "page"}
            if spec.get("page") == "2":
                status, body = get(params)
                assert status == 200, body
                params["cursor"] = json.loads(body)["next_cursor"]
            return params

        def timed_get(params: dict[str, str]) -> tuple[float, bytes]:
            begin = time.perf_counter()
            status, body = get(params)
            elapsed = (time.perf_counter() - begin) * 1000
            if status != 200:
                raise RuntimeError(f"{status}: {body[:300]!r}")
            return elapsed, body

        # Warm up the whole server first (its imports, the database's buffers, both pools):
        # measured cold, the first search's figures were twice the others' on the same machine.
        for _ in range(5):
            for _title, spec in [] if options.me_only else SEARCHES:
                timed_get(params_of(spec))
        for _ in range(200):
            timed_path("/api/v1/me")
        results = []
        for title, spec in [] if options.me_only else SEARCHES:
            params = params_of(spec)
            for _ in range(20):  # warm up connections, plans and caches
                timed_get(params)
            args = OfferQueryArgsSchema().load(params)
            search = build_search(args, parse_terms(args.get("q")))
            sql, bound = search.sql, search.params
            sql_times = []
            with conn.cursor() as cur:
                cur.execute("EXPLAIN " + sql, bound)
                plan = [r[0].strip() for r in cur.fetchall()]
                for _ in range(options.requests):
                    begin = time.perf_counter()
                    cur.execute(sql, bound)
                    rows = cur.fetchall()
                    sql_times.append((time.perf_counter() - begin) * 1000)
            uncached = []
            # Idle while the bare SQL ran: the server may have closed it (keepalive); reopen.
            conn_http.close()
            timed_get(params)
            for _ in range(options.requests):
                redis.incr(OFFERS_VERSION_KEY)
                uncached.append(timed_get(params)[0])
            # Cached, in rounds with GET /me (what it is compared with), so that a change in the
            # machine's load touches both alike.
            cached, me_beside = [], []
            for _ in range(max(1, options.requests // 50)):
                for _ in range(50):
                    elapsed, body = timed_get(params)
                    cached.append(elapsed)
                me_beside += [timed_path("/api/v1/me") for _ in range(50)]
            items = len(json.loads(body)["items"])
            results.append(
                (
                    title,
                    percentiles(sql_times),
                    percentiles(uncached),
                    percentiles(cached),
                    items,
                    len(rows),
                    [line for line in plan if "Scan" in line][:2],
                    percentiles(me_beside),
                )
            )
        # The floor of any authenticated request: GET /me (token check and user row only), and
        # its own floor: the same JWT check in a bare Flask route. Interleaved in rounds, so that
        # a change in the machine's load touches both alike.
        wait_http(f"http://127.0.0.1:{floor_port}/me", proc=floor)
        floor_http = http.client.HTTPConnection("127.0.0.1", floor_port, timeout=10)

        def timed_floor() -> float:
            begin = time.perf_counter()
            floor_http.request("GET", "/me", headers=headers)
            response = floor_http.getresponse()
            response.read()
            assert response.status == 200
            return (time.perf_counter() - begin) * 1000

        for _ in range(50):
            timed_path("/api/v1/me")
            timed_floor()
        me, me_floor = [], []
        # Each worker's CPU time over its own requests too: less at the mercy of the machine's
        # load than latency (a request waits for a core; CPU is what it costs once it has one).
        me_worker = psutil.Process(worker_pid(server.popen.pid))
        floor_worker = psutil.Process(worker_pid(floor.popen.pid))
        me_cpu = floor_cpu = 0.0
        for _ in range(options.requests // 50):
            before = cpu_seconds(me_worker)
            me += [timed_path("/api/v1/me") for _ in range(50)]
            me_cpu += cpu_seconds(me_worker) - before
            before = cpu_seconds(floor_worker)
            me_floor += [timed_floor() for _ in range(50)]
            floor_cpu += cpu_seconds(floor_worker) - before
        if options.profile is not None:
            options.profile.mkdir(parents=True, exist_ok=True)
            for name, proc, call, http_conn in (
                ("me", server, lambda: timed_path("/api/v1/me"), conn_http),
                ("floor", floor, timed_floor, floor_http),
            ):
                http_conn.close()  # idle meanwhile: the server may have closed it (reopens)
                profiles.append(
                    (
                        name,
                        profile_while(proc, call, options.profile, name, options.profile_seconds),
                    )
                )
        floor_http.close()
    finally:
        server.stop()
        floor.stop()
        conn.close()

    log("")
    log(
        f"{options.nodes} nodes, {options.requests} requests per figure, times in ms (p50 / p99); "
        f"load average {started_load:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    log(f"{'search':58} {'bare SQL':>15} {'HTTP uncached':>15} {'HTTP cached':>15}  items")
    for title, sql_p, unc_p, cac_p, items, _rows, _plan, me_b in results:
        log(
            f"{title:58} {sql_p[0]:6.2f} / {sql_p[1]:6.2f} {unc_p[0]:6.2f} / {unc_p[1]:6.2f} "
            f"{cac_p[0]:6.2f} / {cac_p[1]:6.2f}  {items}  (GET /me beside it "
            f"{me_b[0]:.2f} / {me_b[1]:.2f})"
        )
    me_p = percentiles(me)
    floor_p = percentiles(me_floor)
    log(
        f"{'GET /me (the floor of any authenticated request)':58} {'':15} "
        f"{me_p[0]:6.2f} / {me_p[1]:6.2f}"
    )
    log(
        f"{'bare Flask route, same JWT check (the floor of GET /me)':58} {'':15} "
        f"{floor_p[0]:6.2f} / {floor_p[1]:6.2f}"
    )
    load = os.getloadavg()[0]
    log("")
    log(f"ratios on p50 (p99 in brackets); load average {load:.2f}")
    me_ratio = me_p[0] / floor_p[0]
    log(
        f"{'GET /me / bare JWT route (target <= 2)':58} {me_ratio:6.2f} "
        f"({me_p[1] / floor_p[1]:.2f})"
    )
    me_cpu_ms = me_cpu / max(1, len(me)) * 1000
    floor_cpu_ms = floor_cpu / max(1, len(me_floor)) * 1000
    cpu_ratio = me_cpu_ms / max(1e-9, floor_cpu_ms)
    log(
        f"{'  server CPU per request, GET /me / bare JWT route':58} {cpu_ratio:6.2f} "
        f"({me_cpu_ms:.2f} ms / {floor_cpu_ms:.2f} ms)"
    )
    bench = [
        f"BENCH me p50_ms={me_p[0]:.2f} p99_ms={me_p[1]:.2f} floor_p50_ms={floor_p[0]:.2f} "
        f"floor_p99_ms={floor_p[1]:.2f} cpu_ms={me_cpu_ms:.3f} floor_cpu_ms={floor_cpu_ms:.3f} "
        f"cpu_ratio={cpu_ratio:.2f} loadavg={load:.2f} ratio={me_ratio:.2f}"
    ]
    for slug, (title, sql_p, unc_p, cac_p, *_rest, me_b) in zip(
        SLUGS[: len(results)], results, strict=True
    ):
        unc_ratio = unc_p[0] / (sql_p[0] + floor_p[0])
        cac_ratio = cac_p[0] / me_b[0]
        log(
            f"{title[:40]:40} uncached / (SQL + floor) {unc_ratio:5.2f} "
            f"({unc_p[1] / (sql_p[1] + floor_p[1]):.2f}; target <= 3)   "
            f"cached / GET /me {cac_ratio:5.2f} ({cac_p[1] / me_b[1]:.2f}; target <= 1.2)"
        )
        bench.append(
            f"BENCH search name={slug} sql_p50_ms={sql_p[0]:.2f} uncached_p50_ms={unc_p[0]:.2f} "
            f"uncached_p99_ms={unc_p[1]:.2f} cached_p50_ms={cac_p[0]:.2f} "
            f"cached_p99_ms={cac_p[1]:.2f} me_p50_ms={me_b[0]:.2f} "
            f"floor_p50_ms={floor_p[0]:.2f} cached_ratio={cac_ratio:.2f} loadavg={load:.2f} "
            f"ratio={unc_ratio:.2f}"
        )
    log("")
    for title, *_rest, plan, _me in results:
        log(f"plan, {title}: {' | '.join(plan)}")
    if results:
        worst_uncached = max(r[2][1] for r in results)
        worst_cached = max(r[3][1] for r in results)
        log("")
        log(
            f"worst p99 uncached {worst_uncached:.2f} ms (target < 25), "
            f"cached {worst_cached:.2f} ms (target < 3)"
        )
    for name, path in profiles:
        log("")
        log(f"-- py-spy, {name} worker, GET /me in a loop ({path})")
        log(top_functions(path))
    log("")
    for line in bench:
        log(line)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def profile_while(proc, call, folder: Path, name: str, seconds: float) -> Path:
    """Sample `proc`'s worker with py-spy while `call` runs in a loop for `seconds`."""
    out = folder.resolve() / f"search-{name}.txt"
    spy = record(worker_pid(proc.popen.pid), out, duration=seconds)
    # Until py-spy is done (it takes a moment to attach); an idle keep-alive connection would
    # be closed by the server meanwhile.
    deadline = time.monotonic() + seconds + 10
    while spy.poll() is None and time.monotonic() < deadline:
        call()
    spy.wait(30)
    return out


if __name__ == "__main__":
    main()
