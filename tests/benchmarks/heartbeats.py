"""Heartbeat benchmark: N simulated agents over real WebSockets on loopback.

Starts the platform's socket server as production runs it (gunicorn, one gevent worker) on its
own PostgreSQL and InfluxDB databases (dc_bench_heartbeats) and the spare Redis database of the
test slot in DC_TEST_SLOT, registers N nodes, then a gevent client process connects N agents
that each send hello and a heartbeat every 5 s. For a
fixed window after everyone is connected it prints: agents connected, heartbeats/s sustained,
p50/p99/max time from send to visible in Redis (polled every 5 ms), heartbeats lost, InfluxDB
points and batches, and CPU seconds per 1,000 heartbeats for the server (and the client).

    python tests/benchmarks/heartbeats.py                      # 2,000 agents, 60 s window
    python tests/benchmarks/heartbeats.py --agents 1000,2000,3000 --window 45

With several counts it reports the largest that holds (p99 under 250 ms, none lost).
"""

from __future__ import annotations

import sys

if "--role=client" in sys.argv:  # the client is a gevent process; patch before anything else
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SLOT = int(os.environ.get("DC_TEST_SLOT", "1"))
BENCH = "dc_bench_heartbeats"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {
    "APP_ENV": "test",
    "DC_NO_DOTENV": "1",
    "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    + f"/{BENCH}",
    # The second Redis database of this test slot (its tests use the first): not shared.
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{2 + SLOT * 2}"),
    "INFLUXDB_URL": os.environ.get("TEST_INFLUXDB_URL", "http://127.0.0.1:8086"),
    "INFLUXDB_DATABASE": BENCH,
    "DEV_JWT_PRIVATE_KEY": str(ROOT / "var" / "bench-jwt-key.pem"),
    "CLERK_ISSUER": "https://clerk.bench.localhost",
    "LOG_LEVEL": "WARNING",
    "FRPS_PLUGIN_SECRET": "bench-plugin-secret",
    "FRPS_TOKEN": "bench-frps-token",
}
P99_TARGET_MS = 250.0
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

    from app.auth.models import User
    from app.auth.node_keys import issue_key
    from app.db import session_scope
    from app.fleet.models import HostNode
    from app.influx import InfluxClient
    from app.redis_client import get_redis

    get_redis().flushdb()
    influx = InfluxClient.from_settings()
    influx.query(f'DROP DATABASE "{BENCH}"')
    pairs = []
    with session_scope() as session:
        owner = User(clerk_id="bench-host", email="bench@example.com")
        session.add(owner)
        session.flush()
        for i in range(agents):
            node = HostNode(
                owner_id=owner.id,
                name=f"bench-{i}",
                specs={**SPECS, "tflops": 82.6},
                pricing={"hourly_rate": "1.0000", "auto_match_market": False},
                location={"country": "US"},
            )
            session.add(node)
            session.flush()
            pairs.append((str(node.id), issue_key(session, node_id=node.id).key))
    return pairs


def run_once(agents: int, window: float, interval: float, ramp: float) -> dict[str, Any]:
    os.environ.update(ENV)
    from tests.procs import api_server, free_port, wait_http

    pairs = prepare(agents)
    keys_file = ROOT / "var" / "bench-heartbeat-keys.json"
    keys_file.parent.mkdir(exist_ok=True)
    keys_file.write_text(json.dumps(pairs))
    port = free_port()
    server = api_server(
        port, {**ENV, "WORKER_CONNECTIONS": str(agents + 1000)}, name="bench-heartbeats-api"
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=server)
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
                f"--server-pid={server.popen.pid}",
            ],
            cwd=ROOT,
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=window + interval * 3 + agents / ramp + 120,
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
    result["influx_points_stored"] = _influx_count()
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


def report(r: dict[str, Any]) -> None:
    hb = max(1, r["visible"])
    print(
        f"agents connected        {r['connected']}/{r['agents']} "
        f"(connect failures {r['connect_failures']}, dropped {r['dropped']})"
    )
    print(
        f"heartbeats              {r['sent']} sent in {r['window']:.0f} s = "
        f"{r['sent'] / r['window']:.1f}/s sustained (target {r['agents'] / r['interval']:.0f}/s)"
    )
    print(
        f"send -> visible (Redis) p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"max {r['max_ms']:.1f} ms"
    )
    print(f"heartbeats lost         {r['lost']}")
    print(
        f"InfluxDB                {r['influx_points']} points in {r['influx_batches']} batches "
        f"during the window ({r['influx_points'] / max(1, r['influx_batches']):.0f} per batch); "
        f"{r['influx_points_stored']} node points stored overall"
    )
    print(
        f"server CPU              {r['server_cpu_s']:.2f} s = "
        f"{r['server_cpu_s'] / hb * 1000:.3f} s per 1,000 heartbeats "
        f"({r['server_cpu_s'] / r['window'] * 100:.0f}% of a core)"
    )
    print(
        f"client CPU              {r['client_cpu_s']:.2f} s "
        f"({r['client_cpu_s'] / r['window'] * 100:.0f}% of a core)"
    )


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
    args = parser.parse_args()
    counts = [int(c) for c in args.agents.split(",")]
    best = None
    for count in counts:
        print(
            f"== {count} agents, {args.window:.0f} s window, a heartbeat every "
            f"{args.interval:g} s each",
            flush=True,
        )
        result = run_once(count, args.window, args.interval, args.ramp)
        report(result)
        ok = holds(result)
        print(
            f"holds (p99 < {P99_TARGET_MS:.0f} ms, none lost): {'yes' if ok else 'NO'}\n",
            flush=True,
        )
        if ok:
            best = count
    if len(counts) > 1:
        print(f"largest N that holds: {best}")


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

    # The client holds as many sockets as the server: tune its collector the same way (see
    # deploy/gunicorn.conf.py), or its own pauses end up in the latencies it measures.
    gc.freeze()
    gc.set_threshold(50_000, 100, 100)
    opts = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--"))
    url, window = opts["url"], float(opts["window"])
    interval, ramp = float(opts["interval"]), float(opts["ramp"])
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
                    url, header=[f"Authorization: Bearer {key}"], timeout=30
                )
                ws.recv()  # welcome
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

    def monitor() -> None:
        while True:
            gevent.sleep(0.005)
            if not outstanding:
                continue
            nodes = list(outstanding)
            pipe = redis.pipeline(transaction=False)
            for node in nodes:
                pipe.hget(live_key(node), "last_seen_ms")
            seen = pipe.execute()
            now = time.time()
            for node, value in zip(nodes, seen, strict=True):
                entry = outstanding.get(node)
                if entry is not None and value is not None and int(value) >= entry[1]:
                    del outstanding[node]
                    latencies.append((now - entry[0]) * 1000)
                    state["visible"] += 1

    start = time.time() + 0.5
    greenlets = [
        gevent.spawn(agent, node, key, start + i / ramp) for i, (node, key) in enumerate(pairs)
    ]
    gevent.spawn(monitor)
    connected_by = start + len(pairs) / ramp + 5
    while time.time() < connected_by and state["connected"] + state["connect_failures"] < len(
        pairs
    ):
        gevent.sleep(0.2)
    gevent.sleep(interval + 1)  # every agent has sent a heartbeat or two

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
    stats0 = redis.hgetall(STATS_KEY)
    server0, client0 = cpu(server), cpu(me)
    state["measuring"] = True
    began = time.time()
    gevent.sleep(window)
    state["measuring"] = False
    elapsed = time.time() - began
    server1, client1 = cpu(server), cpu(me)
    gevent.sleep(2.0)  # let the last heartbeats of the window become visible
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
