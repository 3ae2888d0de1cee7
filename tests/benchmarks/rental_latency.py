"""Rental latency benchmark: POST /rentals -> agent receives start_instance -> rental active.

    python -m tests.benchmarks.rental_latency [--rentals 100]

Builds its own database (dc_bench_rental_latency_<slot>) by running the migrations, starts the
API as production runs it (gunicorn, gevent worker) and one Dramatiq worker process, then rents
one node --rentals times in a row (rent, wait until active, stop, wait until the node is free):

1. agent receipt: a minimal agent in this process (a real WebSocket client speaking the agent
   protocol: hello, heartbeats, acks) notes when each start_instance frame arrives and answers
   instance_started at once. Its node has 4 GPUs and holds 3 other one-GPU rentals the whole
   time, so each measured rental takes the last free GPU beside them (several rentals per node:
   the GPU count and assignment under the node's lock are in the path). Measures the platform's path alone: API -> queue -> worker (node
   lock, port allocation) -> the node's command stream -> the socket server -> the agent.
2. active with a real container: the real agent (`python -m agent`) starts localhost/busybox
   on the real container engine; measured from the POST until GET /rentals/{id} says active.

The floor, measured in the same run: a Dramatiq round trip (send -> the actor runs) on the same
broker settings and worker options (tests/benchmarks/floors/dramatiq_roundtrip.py), paced like
the rentals. POST -> agent takes one such hop plus the platform's work, so its ratio to that
round trip is the figure that travels between machines.

Prints p50/p99 in milliseconds, the ratios with the load average, and machine-readable lines:

    BENCH rental_latency measure=to_agent p50_ms=... p99_ms=... floor_p50_ms=... ratio=...

Targets: p99 under 200 ms to the agent, under 2 s to active.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SLOT = int(os.environ.get("DC_TEST_SLOT", "0"))


def bench_redis_db(slot: int) -> int:
    """The slot's spare Redis database (its tests use the first); slot 7 has one, shared."""
    return 2 + slot * 2 if slot < 7 else 15


DB_NAME = f"dc_bench_rental_latency_{SLOT}"  # per test slot: runs in other slots use their own
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
    "INFLUXDB_DATABASE": DB_NAME,
    "DEV_JWT_PRIVATE_KEY": str(ROOT / "var" / "test-jwt-key.pem"),
    "CLERK_ISSUER": "https://clerk.bench.localhost",
    "ADMIN_USER_IDS": "bench-admin",
    "LOG_LEVEL": "WARNING",
    "PROXY_PORT_RANGE": f"{21000 + SLOT * 1000}-{21499 + SLOT * 1000}",
    "DOCKER_HOST": os.environ.get("DOCKER_HOST", f"unix://{ROOT}/var/podman/podman.sock"),
}
os.environ.update(ENV)
for _key in ("CLERK_JWT_KEY", "CLERK_JWKS_URL", "CLERK_AUTHORIZED_PARTIES"):
    os.environ.pop(_key, None)
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import websocket  # noqa: E402

from agent.protocol import decode_from_platform, encode  # noqa: E402
from tests.procs import Proc, api_server, free_port, wait_http, wait_until, worker_process  # noqa: E402

IMAGE = "localhost/busybox:latest"
PACE_SECONDS = 0.5
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
NODE = {
    "name": "bench",
    "specs": {
        "gpu_model": "none",
        "gpu_count": 0,
        "gpu_vram_gb": 0,
        "tflops": 1,
        "cpu_cores": 1,
        "ram_gb": 1,
        "disk_gb": 10,
    },
    "pricing": {"hourly_rate": "0.5000"},
    "location": {"country": "US"},
}
SHARED_NODE = {
    **NODE,
    "name": "bench-4gpu",
    "specs": {**NODE["specs"], "gpu_model": "RTX 4090", "gpu_count": 4, "gpu_vram_gb": 24},
    "pricing": {"hourly_rate": "2.0000"},
}
NEIGHBOURS = 3  # one-GPU rentals that stay on the shared node while the rentals are measured


def create_database() -> None:
    from tests.dbutil import recreate_database

    recreate_database(DB_NAME)
    from app.redis_client import get_redis

    get_redis().flushdb()


class MinimalAgent:
    """Just enough of an agent: hello, heartbeats, acks; starts nothing, answers at once."""

    def __init__(self, ws_url: str, api_key: str):
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: Bearer {api_key}"], timeout=10
        )
        self.lock = threading.Lock()
        self.received: dict[str, float] = {}
        self.node_id: str | None = None
        self.stopped = threading.Event()
        self._send(
            "hello",
            {
                "agent_version": "bench",
                "containers": [],
                "specs": {"cpu_cores": 1, "ram_gb": 1, "disk_gb": 10},
            },
        )
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()

    def _send(self, event: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.ws.send(encode(event, data))

    def _beat(self) -> None:
        while not self.stopped.wait(2.0):
            if self.node_id:
                with contextlib.suppress(websocket.WebSocketException, OSError):
                    self._send(
                        "heartbeat",
                        {
                            "node_id": self.node_id,
                            "status": "online",
                            "metrics": {"ram_usage_mb": 100, "disk_usage_gb": 1},
                        },
                    )

    def _receive(self) -> None:
        self.ws.settimeout(None)
        while not self.stopped.is_set():
            try:
                raw = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return
            arrived = time.monotonic()
            if not raw:  # closed
                return
            message = decode_from_platform(raw)
            if message.event == "welcome":
                self.node_id = message.data["node_id"]
                continue
            if message.id:
                self._send("ack", {"id": message.id})
            rental_id = message.data.get("rental_id")
            if message.event == "start_instance":
                self.received.setdefault(rental_id, arrived)
                self._send(
                    "instance_started",
                    {"rental_id": rental_id, "container_id": f"bench-{rental_id[:8]}"},
                )
            elif message.event == "stop_instance":
                self._send(
                    "instance_stopped",
                    {
                        "rental_id": rental_id,
                        "container_id": message.data.get("container_id"),
                        "exit_code": 0,
                    },
                )

    def close(self) -> None:
        self.stopped.set()
        self.ws.close()


class Bench:
    def __init__(self, base: str):
        from app.auth.tokens import mint_dev_token
        from app.config import get_settings

        self.api = f"{base}/api/v1"
        settings = get_settings()
        self.host = {"Authorization": f"Bearer {mint_dev_token(settings, 'bench-host')}"}
        self.renter = {"Authorization": f"Bearer {mint_dev_token(settings, 'bench-renter')}"}
        self.http = requests.Session()
        self.answered: list[float] = []

    def register(self, node: dict[str, Any] = NODE) -> tuple[str, str]:
        body = self.http.post(f"{self.api}/nodes", json=node, headers=self.host, timeout=10).json()
        return body["node"]["id"], body["api_key"]

    def fund_renter(self) -> None:
        from decimal import Decimal

        from app.billing.service import top_up
        from app.db import session_scope

        user_id = self.http.get(f"{self.api}/me", headers=self.renter, timeout=10).json()["id"]
        with session_scope() as session:
            top_up(
                session, user_id=user_id, amount=Decimal("100000"), reference=f"bench-{time.time()}"
            )

    def node_status(self, node_id: str) -> str:
        return self.http.get(f"{self.api}/nodes/{node_id}", headers=self.host, timeout=10).json()[
            "status"
        ]

    def rental(self, rental_id: str) -> dict[str, Any]:
        return self.http.get(
            f"{self.api}/rentals/{rental_id}", headers=self.renter, timeout=10
        ).json()["rental"]

    def rent(self, node_id: str, gpu_count: int | None = None) -> tuple[str, float]:
        body: dict[str, Any] = {
            "node_id": node_id,
            "image": IMAGE,
            "command": COMMAND,
            "ports": [22, 8080],
        }
        if gpu_count is not None:
            body["gpu_count"] = gpu_count
        started = time.monotonic()
        response = self.http.post(f"{self.api}/rentals", headers=self.renter, timeout=10, json=body)
        self.answered.append(time.monotonic() - started)
        if response.status_code != 202:
            raise RuntimeError(f"POST /rentals answered {response.status_code}: {response.text}")
        return response.json()["rental"]["id"], started

    def until_active(self, rental_id: str) -> float:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rental = self.rental(rental_id)
            if rental["status"] == "active":
                return time.monotonic()
            if rental["status"] == "cancelled":
                raise RuntimeError(f"rental cancelled: {rental['failure_reason']}")
            time.sleep(0.005)
        raise RuntimeError("rental not active within 60 s")

    def stop_and_free(self, rental_id: str, node_id: str) -> None:
        self.http.post(f"{self.api}/rentals/{rental_id}/stop", headers=self.renter, timeout=10)
        wait_until(
            lambda: self.rental(rental_id)["status"] == "completed",
            60,
            0.01,
            what="the rental completed",
        )
        wait_until(lambda: self.node_status(node_id) == "online", 60, 0.01, what="the node free")


def p50_p99(values: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in values)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]


def percentiles(values: list[float]) -> str:
    p50, p99 = p50_p99(values)
    return f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max {max(values) * 1000:7.1f} ms   (n={len(values)})"


def dramatiq_floor(rounds: int, worker_timeout: int) -> list[float]:
    """Send -> run of a bare Dramatiq actor, `rounds` times, paced like the rentals."""
    import uuid

    from app.redis_client import get_redis

    floor = Proc(
        "bench-rentals-floor",
        [
            sys.executable,
            "-m",
            "dramatiq",
            "tests.benchmarks.floors.dramatiq_roundtrip",
            "--processes",
            "1",
            "--threads",
            "8",
        ],
        {"dramatiq_worker_timeout": str(worker_timeout)},
    ).start()
    from tests.benchmarks.floors.dramatiq_roundtrip import touch

    client = get_redis()
    times = []
    try:
        for i in range(rounds + 5):
            key = f"bench:floor:{uuid.uuid4().hex}"
            sent = time.time()
            touch.send(key)
            deadline = time.monotonic() + 30
            value = None
            while value is None and time.monotonic() < deadline:
                value = client.get(key)
                if value is None:
                    time.sleep(0.001)
            if value is None:
                raise RuntimeError(f"the floor actor did not run:\n{floor.tail()}")
            if i >= 5:  # the first few warm the worker up
                times.append(float(value) - sent)
            time.sleep(PACE_SECONDS)
    finally:
        floor.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description="rental latency benchmark")
    parser.add_argument("--rentals", type=int, default=100)
    parser.add_argument(
        "--worker-timeout",
        type=int,
        default=100,
        help="the workers' idle poll ceiling in ms (env dramatiq_worker_timeout)",
    )
    args = parser.parse_args()

    create_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = api_server(port, name="bench-rentals-api")
    # An idle Dramatiq consumer polls Redis with a backoff that grows up to the worker timeout
    # (env dramatiq_worker_timeout, 1000 ms by default): that ceiling bounds the pick-up delay.
    worker = worker_process(
        {"dramatiq_worker_timeout": str(args.worker_timeout)},
        name="bench-rentals-worker",
        threads=8,
    )
    procs: list[Proc] = [api.start(), worker.start()]
    try:
        wait_http(f"{base}/api/v1/health", proc=api)
        bench = Bench(base)
        bench.fund_renter()

        # 1. POST -> start_instance at the agent (and -> active with an instant agent), on a
        # shared 4-GPU node where three other rentals hold a GPU each.
        node_id, key = bench.register(SHARED_NODE)
        agent = MinimalAgent(f"ws://127.0.0.1:{port}/ws/agent", key)
        wait_until(lambda: bench.node_status(node_id) == "online", 30, what="node online")
        neighbours = []
        for _ in range(NEIGHBOURS):
            rental_id, _t0 = bench.rent(node_id, gpu_count=1)
            bench.until_active(rental_id)
            neighbours.append(rental_id)
            time.sleep(PACE_SECONDS)
        to_agent, to_active_fast = [], []
        for _ in range(args.rentals):
            rental_id, t0 = bench.rent(node_id, gpu_count=1)
            active_at = bench.until_active(rental_id)
            to_agent.append(agent.received[rental_id] - t0)
            to_active_fast.append(active_at - t0)
            bench.stop_and_free(rental_id, node_id)
            # The socket server allows an agent about 10 frames a second; an agent answering at
            # once would exceed it, so give each rental the time a real one takes at least.
            time.sleep(PACE_SECONDS)
        for rental_id in neighbours:
            bench.http.post(
                f"{bench.api}/rentals/{rental_id}/stop", headers=bench.renter, timeout=10
            )
        agent.close()

        # 2. POST -> active with the real agent and a real container.
        node_id, key = bench.register()
        real = Proc(
            "bench-rentals-agent",
            [
                sys.executable,
                "-m",
                "agent",
                "--platform-url",
                base,
                "--api-key",
                key,
                "--data-dir",
                str(ROOT / "tests" / "artifacts" / "bench-agent"),
                "--heartbeat-interval",
                "2",
                "--frpc-bin",
                "",
            ],
            {"DC_LOG_LEVEL": "WARNING"},
        )
        procs.append(real.start())
        wait_until(lambda: bench.node_status(node_id) == "online", 30, what="real agent online")
        to_active = []
        for _ in range(args.rentals):
            rental_id, t0 = bench.rent(node_id)
            to_active.append(bench.until_active(rental_id) - t0)
            bench.stop_and_free(rental_id, node_id)

        floor = dramatiq_floor(args.rentals, args.worker_timeout)
        load = os.getloadavg()[0]
        print(
            f"rental latency over {args.rentals} rentals each (gunicorn+gevent API, 1 worker "
            f"process x 8 threads, worker timeout {args.worker_timeout} ms, Podman):"
        )
        print(f"  POST answered (202):                   {percentiles(bench.answered)}")
        print(f"  (measured rentals take 1 of 4 GPUs beside {NEIGHBOURS} other live rentals)")
        print(f"  POST -> agent receives start_instance: {percentiles(to_agent)}")
        print(f"  POST -> active, agent answering at once: {percentiles(to_active_fast)}")
        print(f"  POST -> active, real agent + container:  {percentiles(to_active)}")
        print(f"  floor: Dramatiq send -> actor runs:      {percentiles(floor)}")
        floor_p = p50_p99(floor)
        print(
            f"ratios on p50 to the Dramatiq round trip (p99 in brackets); load average {load:.2f}"
        )
        for measure, values in (
            ("to_agent", to_agent),
            ("to_active_fast", to_active_fast),
            ("to_active_container", to_active),
        ):
            p = p50_p99(values)
            print(f"  {measure:22} {p[0] / floor_p[0]:6.2f} ({p[1] / floor_p[1]:.2f})")
        for measure, values in (
            ("to_agent", to_agent),
            ("to_active_fast", to_active_fast),
            ("to_active_container", to_active),
        ):
            p = p50_p99(values)
            print(
                f"BENCH rental_latency measure={measure} p50_ms={p[0]:.1f} p99_ms={p[1]:.1f} "
                f"floor_p50_ms={floor_p[0]:.1f} floor_p99_ms={floor_p[1]:.1f} "
                f"loadavg={load:.2f} ratio={p[0] / floor_p[0]:.2f}"
            )
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    main()
