"""Heartbeat benchmark: N simulated agents over real WebSockets on loopback, against its floor.

Starts the platform's socket server as production runs it (gunicorn, one gevent worker) on its
own PostgreSQL and InfluxDB databases (dc_bench_heartbeats_<slot>) and the spare Redis database
of the test slot in DC_TEST_SLOT, registers N nodes, then a gevent client process connects N
agents that each send hello and a heartbeat every 5 s. Once everyone is connected, the window
opens when the server has caught up with the connection storm (an interval in which every
heartbeat became visible within 250 ms; at most --settle-max seconds, and how long it took is
printed). For that fixed window it prints: agents connected, heartbeats/s sustained,
p50/p99/max time from send to visible in Redis (polled every 10 ms), heartbeats lost, InfluxDB
points and batches, and CPU seconds per 1,000 heartbeats for the server (and the client).

Before that, the same client, N and window run against the floor (tests/benchmarks/floors/
heartbeat_server.py: a bare flask-sock app under gunicorn with one gevent worker doing only
`json.loads` and one Redis HSET per heartbeat). Machines are shared and their speed varies, so
the figure that travels is the ratio of the two servers' CPU per heartbeat, measured in the
same run; the load average is printed with it. The last lines are machine-readable:

    BENCH heartbeats agents=10000 p99_ms=... lost=0 cpu_per_1k_s=... floor_cpu_per_1k_s=...
        settle_s=... floor_settle_s=... loadavg=... ratio=... holds=yes

    python tests/benchmarks/heartbeats.py                      # 2,000 agents, 60 s window
    python tests/benchmarks/heartbeats.py --agents 10000 --window 60
    python tests/benchmarks/heartbeats.py --agents 10000 --profile var/profiles   # py-spy

With several counts it reports the largest that holds (p99 under 250 ms, none lost).
`--profile DIR` samples each server's worker with py-spy during the window (raw collapsed
stacks, `--nonblocking`) and prints the functions where it spent the most time.
"""

from __future__ import annotations

import sys

if "--role=client" in sys.argv:  # the client is a gevent process; patch before anything else
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SLOT = int(os.environ.get("DC_TEST_SLOT", "1"))


def bench_redis_db(slot: int) -> int:
    """The slot's spare Redis database (its tests use the first); slot 7 has one, shared."""
    return 2 + slot * 2 if slot < 7 else 15


BENCH = f"dc_bench_heartbeats_{SLOT}"  # per test slot: runs in other slots use their own
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {
    "APP_ENV": "test",
    "DC_NO_DOTENV": "1",
    "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    + f"/{BENCH}",
    # The second Redis database of this test slot (its tests use the first): not shared.
    "REDIS_URL": os.environ.get(
        "BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{bench_redis_db(SLOT)}"
    ),
    "INFLUXDB_URL": os.environ.get("TEST_INFLUXDB_URL", "http://127.0.0.1:8086"),
    "INFLUXDB_DATABASE": BENCH,
    "DEV_JWT_PRIVATE_KEY": str(ROOT / "var" / "bench-jwt-key.pem"),
    "CLERK_ISSUER": "https://clerk.bench.localhost",
    "LOG_LEVEL": "WARNING",
    "FRPS_PLUGIN_SECRET": "bench-plugin-secret",
    "FRPS_TOKEN": "bench-frps-token",
}
P99_TARGET_MS = 250.0
P99_TARGET_S = P99_TARGET_MS / 1000
# How often the client looks for its heartbeats in Redis: the latencies' resolution (one script
# call per poll, which reads every outstanding heartbeat's hash in Redis).
POLL_SECONDS = 0.010
# KEYS: live hashes; ARGV: the send time (ms) of each one's outstanding heartbeat. Returns the
# (1-based) positions of those whose last_seen_ms has reached it.
VISIBLE_SCRIPT = """
local seen = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('HGET', key, 'last_seen_ms')
  if value and tonumber(value) >= tonumber(ARGV[i]) then seen[#seen + 1] = i end
end
return seen
"""
METRICS = {
    "cpu_temp": 55.0,
    "cpu_utilization": 12.5,
    "gpu_temp": [61.0, 63.0],
    "gpu_utilization": [90.0, 80.0],
    "gpu_memory_used_mb": [1000.0, 2000.0],
    "gpu_power_w": [300.0, 310.0],
    "ram_usage_mb": 4096.0,
    "disk_usage_gb": 120.0,
}
SPECS = {
    "gpu_model": "RTX 4090",
    "gpu_count": 2,
    "gpu_vram_gb": 24,
    "cpu_cores": 16,
    "ram_gb": 62.8,
    "disk_gb": 931.5,
}


# ------------------------------------------------------------------------------ orchestrator
def prepare(agents: int) -> list[tuple[str, str]]:
    """A fresh database with `agents` registered nodes; returns (node id, api key) pairs."""
    from tests.dbutil import recreate_database

    recreate_database(BENCH, env=ENV)

    from app.auth.keys import NODE_KEYS
    from app.auth.models import User
    from app.db import session_scope
    from app.fleet.models import HostNode, NodeApiKey
    from app.influx import InfluxClient
    from app.redis_client import get_redis

    get_redis().flushdb()
    influx = InfluxClient.from_settings()
    influx.query(f'DROP DATABASE "{BENCH}"')
    pairs = []
    # In bulk: one flush for the nodes and one for their keys (what issue_key writes for a node
    # that has none yet), not two round trips per node.
    with session_scope() as session:
        owner = User(clerk_id="bench-host", email="bench@example.com")
        session.add(owner)
        session.flush()
        nodes = [
            HostNode(
                owner_id=owner.id,
                name=f"bench-{i}",
                specs={**SPECS, "tflops": 82.6},
                pricing={"hourly_rate": "1.0000", "auto_match_market": False},
                location={"country": "US"},
            )
            for i in range(agents)
        ]
        session.add_all(nodes)
        session.flush()
        for node in nodes:
            issued = NODE_KEYS.issue()
            session.add(NodeApiKey(node_id=node.id, prefix=issued.lookup, key_hash=issued.key_hash))
            pairs.append((str(node.id), issued.key))
        session.flush()
    return pairs


def floor_server(port: int, agents: int) -> Any:
    """The bare server the platform's figures are divided by (see tests/benchmarks/floors/)."""
    from tests.procs import Proc

    return Proc(
        "bench-heartbeats-floor",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "tests/benchmarks/floors/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "tests.benchmarks.floors.heartbeat_server:app",
        ],
        {**ENV, "WORKER_CONNECTIONS": str(agents + 1000)},
    )


def run_once(
    pairs: list[tuple[str, str]],
    window: float,
    interval: float,
    ramp: float,
    *,
    floor: bool,
    settle_max: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    os.environ.update(ENV)
    from app.redis_client import get_redis
    from tests.procs import api_server, free_port, wait_http

    agents = len(pairs)
    get_redis().flushdb()
    keys_file = ROOT / "var" / "bench-heartbeat-keys.json"
    keys_file.parent.mkdir(exist_ok=True)
    keys_file.write_text(json.dumps(pairs))
    port = free_port()
    if floor:
        server = floor_server(port, agents).start()
        health = f"http://127.0.0.1:{port}/health"
    else:
        server = api_server(
            port, {**ENV, "WORKER_CONNECTIONS": str(agents + 1000)}, name="bench-heartbeats-api"
        ).start()
        health = f"http://127.0.0.1:{port}/api/v1/health"
    try:
        wait_http(health, proc=server)
        assert server.popen is not None
        client = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--role=client",
                f"--url=ws://127.0.0.1:{port}/ws/agent",
                f"--keys={keys_file}",
                f"--window={window}",
                f"--interval={interval}",
                f"--ramp={ramp}",
                f"--settle-max={settle_max}",
                f"--server-pid={server.popen.pid}",
                *([f"--profile={profile}"] if profile is not None else []),
            ],
            cwd=ROOT,
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=window + settle_max + interval * 3 + agents / ramp * 4 + 240,
        )
        if client.returncode != 0:
            raise RuntimeError(f"client failed:\n{client.stderr[-3000:]}")
        result = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        server.signal(signal.SIGTERM)
        assert server.popen is not None
        try:
            server.popen.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        keys_file.unlink(missing_ok=True)
    result["influx_points_stored"] = None if floor else _influx_count()
    return result


def _influx_count() -> int | None:
    from app.influx import InfluxClient

    try:
        body = InfluxClient.from_settings().query(
            'SELECT count("disk_usage_gb") FROM "node_metrics"'
        )
        series = body["results"][0].get("series") or []
        return int(series[0]["values"][0][1]) if series else 0
    except Exception:
        return None


def cpu_per_1k(r: dict[str, Any]) -> float:
    return r["server_cpu_s"] / max(1, r["visible"]) * 1000


def report(r: dict[str, Any], floor: dict[str, Any] | None) -> None:
    """The platform's figures with the floor's beside them (a dash without a floor)."""

    def both(fmt: str, value: Any, floor_value: Any) -> str:
        return f"{fmt.format(value):>12}{fmt.format(floor_value) if floor else '-':>12}"

    print(f"{'':24}{'platform':>12}{'floor':>12}")
    rows = [
        ("agents connected", "connected", "{:.0f}"),
        ("connect failures", "connect_failures", "{:.0f}"),
        ("dropped", "dropped", "{:.0f}"),
        ("heartbeats sent", "sent", "{:.0f}"),
        ("p50 ms", "p50_ms", "{:.1f}"),
        ("p99 ms", "p99_ms", "{:.1f}"),
        ("max ms", "max_ms", "{:.1f}"),
        ("lost", "lost", "{:.0f}"),
        ("server CPU s", "server_cpu_s", "{:.2f}"),
        ("client CPU s", "client_cpu_s", "{:.2f}"),
    ]
    f = floor or {}
    for title, key, fmt in rows:
        print(f"{title:24}{both(fmt, r[key], f.get(key))}")
    print(f"{'caught up after s':24}{_settled(r):>12}{_settled(floor) if floor else '-':>12}")
    floor_cpu = cpu_per_1k(floor) if floor else None
    print(f"{'server CPU s per 1,000':24}{both('{:.3f}', cpu_per_1k(r), floor_cpu)}")
    floor_share = floor["server_cpu_s"] / floor["window"] * 100 if floor else None
    print(
        f"{'server % of a core':24}{both('{:.0f}', r['server_cpu_s'] / r['window'] * 100, floor_share)}"
    )
    print(f"{'load average (1 min)':24}{both('{:.2f}', r['loadavg'], f.get('loadavg'))}")
    print(
        f"heartbeats/s sustained  {r['sent'] / r['window']:.1f} "
        f"(target {r['agents'] / r['interval']:.0f}/s)"
    )
    print(
        f"InfluxDB                {r['influx_points']} points in {r['influx_batches']} batches "
        f"during the window ({r['influx_points'] / max(1, r['influx_batches']):.0f} per batch); "
        f"{r['influx_points_stored']} node points stored overall"
    )


def _settled(r: dict[str, Any]) -> str:
    """Seconds from everyone connected to the window; '>N' when the server never caught up."""
    return f"{r['settle_s']:.0f}" if r["settled"] else f">{r['settle_s']:.0f}"


def holds(r: dict[str, Any]) -> bool:
    return (
        r["connected"] == r["agents"]
        and r["lost"] == 0
        and r["dropped"] == 0
        and r["p99_ms"] < P99_TARGET_MS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="2000", help="a count, or several: 1000,2000,4000")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat period")
    parser.add_argument("--ramp", type=float, default=250.0, help="connections per second")
    parser.add_argument(
        "--settle-max",
        type=float,
        default=120.0,
        help="longest wait, once everyone is connected, for the server to catch up",
    )
    parser.add_argument("--profile", type=Path, help="folder for py-spy profiles of the window")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (no ratio)")
    args = parser.parse_args()
    os.environ.update(ENV)
    counts = [int(c) for c in args.agents.split(",")]
    best = None
    bench_lines = []
    for count in counts:
        print(
            f"== {count} agents, {args.window:.0f} s window, a heartbeat every "
            f"{args.interval:g} s each; load average {_loadavg()}",
            flush=True,
        )
        pairs = prepare(count)
        runs: dict[str, dict[str, Any]] = {}
        for name in ("floor", "platform"):
            if name == "floor" and args.no_floor:
                continue
            profile = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile = args.profile.resolve() / f"heartbeats-{count}-{name}.txt"
            runs[name] = run_once(
                pairs,
                args.window,
                args.interval,
                args.ramp,
                floor=name == "floor",
                settle_max=args.settle_max,
                profile=profile,
            )
            if profile is not None and profile.exists():
                print(f"-- py-spy, {name} worker, {count} agents ({profile})")
                from tests.profiling import top_functions

                print(top_functions(profile))
        result = runs["platform"]
        ok = holds(result)
        line = (
            f"BENCH heartbeats agents={count} p99_ms={result['p99_ms']:.1f} "
            f"lost={result['lost'] + result['dropped']} cpu_per_1k_s={cpu_per_1k(result):.3f} "
        )
        if "floor" in runs:
            floor = runs["floor"]
            report(result, floor)
            ratio = cpu_per_1k(result) / max(1e-9, cpu_per_1k(floor))
            print(
                f"holds (p99 < {P99_TARGET_MS:.0f} ms, none lost): {'yes' if ok else 'NO'}; "
                f"floor holds: {'yes' if holds(floor) else 'NO'}; "
                f"CPU per heartbeat, platform / floor: {ratio:.2f}\n",
                flush=True,
            )
            line += (
                f"floor_cpu_per_1k_s={cpu_per_1k(floor):.3f} floor_p99_ms={floor['p99_ms']:.1f} "
                f"floor_lost={floor['lost'] + floor['dropped']} settle_s={_settled(result)} "
                f"floor_settle_s={_settled(floor)} loadavg={result['loadavg']:.2f} "
                f"ratio={ratio:.2f} holds={'yes' if ok else 'no'}"
            )
        else:  # --no-floor: the platform's column alone, and no ratio
            report(result, None)
            print(f"holds (p99 < {P99_TARGET_MS:.0f} ms, none lost): {'yes' if ok else 'NO'}\n")
            line += (
                f"settle_s={_settled(result)} loadavg={result['loadavg']:.2f} ratio=n/a "
                f"holds={'yes' if ok else 'no'}"
            )
        bench_lines.append(line)
        if ok:
            best = count
    if len(counts) > 1:
        print(f"largest N that holds: {best}")
    for line in bench_lines:
        print(line, flush=True)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------ client
def client_main(argv: list[str]) -> None:
    import gc

    import gevent
    import psutil
    import websocket
    from gevent.lock import Semaphore

    from app.fleet.live import live_key
    from app.fleet.metrics import STATS_KEY
    from app.redis_client import get_redis
    from tests.profiling import record

    # The client holds as many sockets as the server: tune its collector the same way (see
    # deploy/gunicorn.conf.py), or its own pauses end up in the latencies it measures.
    gc.freeze()
    gc.set_threshold(50_000, 100, 100)
    opts = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--"))
    url, window = opts["url"], float(opts["window"])
    interval, ramp = float(opts["interval"]), float(opts["ramp"])
    settle_max = float(opts["settle-max"])
    pairs = json.loads(Path(opts["keys"]).read_text())
    server = psutil.Process(int(opts["server-pid"]))
    redis = get_redis()

    state: dict[str, Any] = {
        "connected": 0,
        "connect_failures": 0,
        "dropped": 0,
        "measuring": False,
        "sent": 0,
        "visible": 0,
        "lost": 0,
    }
    outstanding: dict[str, tuple[float, int]] = {}  # node -> (send time, send ms)
    latencies: list[float] = []
    connect_gate = Semaphore(200)

    def agent(node_id: str, key: str, start_at: float) -> None:
        gevent.sleep(max(0.0, start_at - time.time()))
        try:
            with connect_gate:
                ws = websocket.create_connection(
                    url, header=[f"Authorization: Bearer {key}"], timeout=60
                )
                ws.recv()  # welcome
                # No read timeout from here: a ping the server sends late under load must not
                # end the reader (and count the agent as dropped).
                ws.settimeout(None)
                ws.send(
                    json.dumps(
                        {
                            "event": "hello",
                            "data": {"agent_version": "bench", "specs": SPECS, "containers": []},
                        }
                    )
                )
        except Exception:
            state["connect_failures"] += 1
            return
        state["connected"] += 1
        frame = json.dumps(
            {
                "event": "heartbeat",
                "data": {"node_id": node_id, "status": "online", "metrics": METRICS},
            }
        )

        def read() -> None:  # answers pings; notices a close
            try:
                while True:
                    ws.recv()
            except Exception:
                pass

        reader = gevent.spawn(read)
        next_beat = time.time() + random.uniform(0, interval)
        try:
            while True:
                gevent.sleep(max(0.0, next_beat - time.time()))
                next_beat += interval
                if not reader:  # the reader ended: the server closed the socket
                    raise ConnectionError
                measuring = state["measuring"]
                if measuring and outstanding.pop(node_id, None) is not None:
                    state["lost"] += 1  # not visible by the time of the next heartbeat
                sent_at = time.time()
                ws.send(frame)
                if measuring:
                    state["sent"] += 1
                    outstanding[node_id] = (sent_at, int(sent_at * 1000))
        except Exception:
            state["dropped"] += 1
            state["connected"] -= 1

    # One script call per poll, returning only the heartbeats now visible: a pipeline of one
    # HGET per outstanding heartbeat cost the client more the slower the server was (a slow
    # server leaves more outstanding), and took CPU from the server it was measuring.
    visible_now = redis.register_script(VISIBLE_SCRIPT)

    def monitor() -> None:
        while True:
            gevent.sleep(POLL_SECONDS)
            if not outstanding:
                continue
            asked = list(outstanding.items())
            found = visible_now(
                keys=[live_key(node) for node, _ in asked],
                args=[entry[1] for _, entry in asked],
            )
            now = time.time()
            for index in found:
                node, entry = asked[int(index) - 1]
                if outstanding.get(node) is entry:  # not replaced by a newer one meanwhile
                    del outstanding[node]
                    latencies.append((now - entry[0]) * 1000)
                    state["visible"] += 1

    start = time.time() + 0.5
    greenlets = [
        gevent.spawn(agent, node, key, start + i / ramp) for i, (node, key) in enumerate(pairs)
    ]
    gevent.spawn(monitor)
    # Measure only once everyone is connected: handshakes (authentication, the hello) cost far
    # more than heartbeats, and a window that overlaps them measures the ramp, not the steady
    # state. A loaded machine connects more slowly than `ramp`: allow for it.
    connected_by = start + len(pairs) / ramp * 4 + 60
    while time.time() < connected_by and state["connected"] + state["connect_failures"] < len(
        pairs
    ):
        gevent.sleep(0.2)
    connected_at = time.time()
    gevent.sleep(interval)  # every agent has sent a heartbeat since it connected
    # Connected is not done: the server may still be working through the storm (hellos, what
    # they hand to workers, first deliveries). The window opens once it has caught up: after an
    # interval in which every heartbeat became visible, none late, p99 under the target; or
    # after --settle-max seconds, whether it did or not (it then fails in the window).
    state["measuring"] = True
    settled = False
    while not settled and time.time() - connected_at < settle_max:
        state.update(sent=0, visible=0, lost=0)
        latencies.clear()
        gevent.sleep(interval)
        late = sum(
            1 for sent_at, _ in list(outstanding.values()) if time.time() - sent_at > P99_TARGET_S
        )
        ordered = sorted(latencies)
        p99 = ordered[int(len(ordered) * 0.99)] if ordered else math.inf
        settled = state["lost"] == late == 0 and p99 < P99_TARGET_MS
    state["measuring"] = False
    settle_s = time.time() - connected_at
    outstanding.clear()
    state.update(sent=0, visible=0, lost=0)
    latencies.clear()

    def cpu(proc: psutil.Process) -> float:
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    me = psutil.Process()
    profiler = None
    if opts.get("profile"):
        workers = server.children()
        profiler = record(
            (workers[0] if workers else server).pid,
            Path(opts["profile"]),
            duration=window,
            rate=50,
        )
    stats0 = redis.hgetall(STATS_KEY)
    server0, client0 = cpu(server), cpu(me)
    state["measuring"] = True
    began = time.time()
    gevent.sleep(window)
    state["measuring"] = False
    elapsed = time.time() - began
    server1, client1 = cpu(server), cpu(me)
    loadavg = os.getloadavg()[0]
    gevent.sleep(2.0)  # let the last heartbeats of the window become visible
    if profiler is not None:
        profiler.wait(30)
    stats1 = redis.hgetall(STATS_KEY)
    state["lost"] += len(outstanding)

    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    result = {
        **state,
        "agents": len(pairs),
        "window": elapsed,
        "interval": interval,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] if latencies else 0,
        "influx_points": int(stats1.get("points", 0)) - int(stats0.get("points", 0)),
        "influx_batches": int(stats1.get("batches", 0)) - int(stats0.get("batches", 0)),
        "server_cpu_s": server1 - server0,
        "client_cpu_s": client1 - client0,
        "loadavg": loadavg,
        "settle_s": settle_s,
        "settled": settled,
    }
    result.pop("measuring")
    gevent.killall(greenlets, block=False)
    print(json.dumps(result))


if __name__ == "__main__":
    if "--role=client" in sys.argv:
        sys.path.insert(0, str(ROOT))
        os.environ.update(ENV)
        client_main(sys.argv[1:])
    else:
        sys.path.insert(0, str(ROOT))
        main()
