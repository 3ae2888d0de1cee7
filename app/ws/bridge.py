"""The bridge between agent sockets, Redis and the workers: one per socket-server process.

Per connection the handler only parses and validates frames (app/ws/connection.py). Everything
else is shared by the process, so thousands of sockets cost thousands of greenlets and nothing
more:

- app/ws/registry.py: the connections this process holds, one per node;
- app/ws/heartbeats.py: one buffer of heartbeats that a single writer stores in batches;
- app/ws/pump.py: one pub/sub listener and a sweep that send each node's queued commands;
- app/ws/keepalive.py: one loop that pings every socket;
- app/ws/dispatch.py: what each frame does; agent events, hellos and the first heartbeat after
  an outage are handed to Dramatiq actors, which own every state change.

Threads are greenlets under the gevent worker, and real threads under a threaded dev server.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from simple_websocket import ConnectionClosed

from app.config import Settings, get_settings
from app.fleet.metrics import MetricsWriter
from app.ws.connection import CLOSE_GOING_AWAY, AgentConnection
from app.ws.dispatch import ActorSends, FrameDispatch
from app.ws.heartbeats import HeartbeatWriter
from app.ws.keepalive import KeepAlive
from app.ws.pump import CommandPump
from app.ws.registry import ConnectionRegistry

REDIS_CONNECTIONS = 48  # per process, for the bridge (the pub/sub reader holds one of them)


class Bridge:
    def __init__(self, settings: Settings, client: redis.Redis):
        self.heartbeat_interval = float(max(1, min(5, settings.heartbeat_timeout_seconds // 4)))
        self.max_containers = settings.agent_max_containers_per_hello
        self.stopping = threading.Event()
        self.metrics = MetricsWriter.from_settings(settings, stats_redis=client)
        self.registry = ConnectionRegistry(client)
        self.pump = CommandPump(client, self.registry, self.stopping)
        sends = ActorSends()
        self.heartbeats = HeartbeatWriter(
            client, self.metrics, self.stopping, on_back=sends.node_back
        )
        self.dispatch = FrameDispatch(client, sends, self.heartbeats, self.pump)
        self.keepalive = KeepAlive(self.registry, self.stopping)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.metrics.start()
        for target, name in (
            (self.heartbeats.write_loop, "live-writer"),
            (self.pump.listen_loop, "command-listener"),
            (self.keepalive.loop, "agent-pings"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """Close every socket (agents reconnect to another process) and flush what is buffered."""
        self.stopping.set()
        self.registry.close_all(CLOSE_GOING_AWAY, "server shutting down")
        self.heartbeats.flush()
        self.metrics.stop()

    def serve(
        self,
        ws: Any,
        node_id: str,
        *,
        draining: bool,
        tunnel: dict[str, Any] | None = None,
        key_id: str | None = None,
    ) -> None:
        conn = AgentConnection(
            ws,
            node_id,
            draining=draining,
            heartbeat_interval=self.heartbeat_interval,
            tunnel=tunnel,
            key_id=key_id,
            max_containers=self.max_containers,
        )
        self.registry.attach(conn)
        try:
            conn.serve(self.dispatch.handle)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.registry.detach(conn)


def bridge_redis(url: str) -> redis.Redis:
    """A client whose pool makes greenlets wait for a connection instead of failing.

    A reconnect storm puts a thousand greenlets on Redis at once; the default pool would open a
    connection for each (and refuse past its limit). This one queues them behind a few dozen.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=20,
        decode_responses=True,
        health_check_interval=30,
        socket_timeout=10,
        socket_connect_timeout=5,
    )
    return redis.Redis(connection_pool=pool)


_bridge: Bridge | None = None
_bridge_pid: int | None = None
_bridge_lock = threading.Lock()


def get_bridge() -> Bridge:
    """This process's bridge, started on first use (after any fork)."""
    global _bridge, _bridge_pid
    if _bridge is not None and _bridge_pid == os.getpid():
        return _bridge
    with _bridge_lock:
        if _bridge is None or _bridge_pid != os.getpid():
            settings = get_settings()
            bridge = Bridge(settings, bridge_redis(settings.redis_url))
            bridge.start()
            _bridge, _bridge_pid = bridge, os.getpid()
    return _bridge


def shutdown_bridge() -> None:
    if _bridge is not None and _bridge_pid == os.getpid():
        _bridge.shutdown()
