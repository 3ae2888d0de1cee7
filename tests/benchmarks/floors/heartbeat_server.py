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
from gevent.queue import Queue

app = Flask(__name__)
# No ping_interval: a bare server sends no keepalives (the platform's one loop of pings is part
# of what it is measured with), and simple_websocket's per-read selector would cost the floor more.
app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": 64 * 1024}
sock = Sock(app)
# Greenlets take one of a few dozen Redis clients of one connection each, and put it back after
# their HSET. (redis-py 8's BlockingConnectionPool, tried first, lost its connections under the
# connection storm of 10,000 sockets and then failed every HSET with "No connection available"
# after its timeout, which dropped half the sockets: a floor that measures a pool bug.)
REDIS_CLIENTS = 48
clients: Queue = Queue()
for _ in range(REDIS_CLIENTS):
    clients.put(redis.Redis.from_url(os.environ["REDIS_URL"], single_connection_client=True))
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
            client = clients.get()
            try:
                client.hset(f"dc:node:{node_id}:live", "last_seen_ms", int(time.time() * 1000))
            finally:
                clients.put(client)
