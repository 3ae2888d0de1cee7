"""The heartbeat floor: the least a socket server can do per heartbeat, for benchmarks to compare.

A bare flask-sock app under gunicorn with one gevent worker (run with gunicorn.conf.py beside this
file): it sends a welcome, then for every frame does `json.loads` and, for a heartbeat, one Redis
HSET of the node's `last_seen_ms` on the key the platform uses (so the benchmark's client sees it
the same way). No authentication, no validation, no batching, no metrics.

    gunicorn -c tests/benchmarks/floors/gunicorn.conf.py tests.benchmarks.floors.heartbeat_server:app
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25, "max_message_size": 64 * 1024}
sock = Sock(app)
# Greenlets wait for one of a few dozen connections (as in the platform's bridge), rather than
# each opening its own and failing past the pool's limit.
client = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(
        os.environ["REDIS_URL"], max_connections=48, timeout=20, decode_responses=True
    )
)
WELCOME = json.dumps({"event": "welcome", "data": {"heartbeat_interval": 5}})


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@sock.route("/ws/agent")
def agent(ws: Any) -> None:
    ws.send(WELCOME)
    while True:
        frame = json.loads(ws.receive())
        if frame.get("event") == "heartbeat":
            node_id = frame["data"]["node_id"]
            client.hset(f"dc:node:{node_id}:live", "last_seen_ms", int(time.time() * 1000))
