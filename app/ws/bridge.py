"""The bridge between agent sockets, Redis and the workers: one per socket-server process.

Per connection the handler only parses and validates frames. Everything else is shared by the
process, so thousands of sockets cost thousands of greenlets and nothing more:

- heartbeats go into one buffer that a single writer stores in Redis with one pipeline per batch
  (live hash, last-seen set) and hands to the InfluxDB batch writer; no database write;
- one pub/sub subscription tells the process that a node's command stream has a new entry or
  that a node's connection moved elsewhere; a periodic sweep (one pipeline over the local
  nodes) catches anything a dropped subscription missed;
- agent events, hellos and the first heartbeat after an outage are handed to Dramatiq actors,
  which own every state change.

Threads are greenlets under the gevent worker, and real threads under a threaded dev server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Any

import redis
from simple_websocket import ConnectionClosed

from agent.protocol import ProtocolError, decode_from_agent, encode, error_frame
from app.config import Settings, get_settings
from app.fleet import commands, live
from app.fleet.metrics import MetricsWriter, heartbeat_lines

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SECONDS = 30.0
RECEIVE_POLL_SECONDS = 15.0
SWEEP_SECONDS = 10.0
SWEEP_CHUNK = 250
COALESCE_SECONDS = 0.005  # let heartbeats that arrive together share one Redis round trip
DELIVERY_PAGE = 100
# An agent sends a heartbeat every few seconds and the odd event: allow bursts, refuse floods.
FRAMES_PER_SECOND = 10.0
FRAME_BURST = 50
REFUSED_BEFORE_CLOSE = 100  # refused frames within REFUSAL_WINDOW seconds: the agent is cut off
REFUSAL_WINDOW = 10.0

REDIS_CONNECTIONS = 48  # per process, for the bridge (the pub/sub reader holds one of them)
ACTOR_SENDS = 16  # concurrent Dramatiq sends (its broker's pool refuses past 100)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_REPLACED = 4000
CLOSE_REVOKED = 4001


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AgentConnection:
    """One agent's socket, served by the greenlet of its request."""

    def __init__(
        self,
        bridge: Bridge,
        ws: Any,
        node_id: str,
        *,
        draining: bool,
        tunnel: dict[str, Any] | None = None,
    ):
        self.bridge = bridge
        self.ws = ws
        self.node_id = node_id
        self.draining = draining
        self.tunnel = tunnel
        self.token = uuid.uuid4().hex
        self.ready = False  # the agent said hello: commands may flow
        self.closed = False
        self.last_sent_id: str | None = None  # newest stream entry sent on this connection
        self.bucket = TokenBucket(FRAMES_PER_SECOND, FRAME_BURST)
        self.refusals: deque[float] = deque(maxlen=REFUSED_BEFORE_CLOSE)
        self.last_refusal_notice = 0.0
        self.send_lock = threading.Lock()
        self.deliver_lock = threading.Lock()

    # ------------------------------------------------------------------ sending
    def send(self, frame: str) -> bool:
        with self.send_lock:
            if self.closed:
                return False
            try:
                self.ws.send(frame)
                return True
            except (ConnectionClosed, OSError):
                self.closed = True
                return False

    def send_error(
        self, code: str, message: str, *, frame_id: str | None = None, errors: Any = None
    ) -> None:
        self.send(error_frame(code, message, frame_id=frame_id, errors=errors))

    def close(self, code: int, reason: str) -> None:
        with self.send_lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(ConnectionClosed, OSError):
                self.ws.close(code, reason)
        self.ws.event.set()  # wake the handler blocked in receive()

    # ------------------------------------------------------------------ receiving
    def serve(self) -> None:
        welcome: dict[str, Any] = {
            "node_id": self.node_id,
            "draining": self.draining,
            "heartbeat_interval": self.bridge.heartbeat_interval,
        }
        if self.tunnel is not None:
            welcome["tunnel"] = self.tunnel
        self.send(encode("welcome", welcome))
        hello_deadline = time.monotonic() + HELLO_TIMEOUT_SECONDS
        while not self.closed:
            wait = (
                RECEIVE_POLL_SECONDS if self.ready else max(0.0, hello_deadline - time.monotonic())
            )
            raw = self.ws.receive(timeout=wait)
            if raw is None:
                if not self.ready and time.monotonic() >= hello_deadline:
                    self.close(CLOSE_POLICY, "hello expected")
                continue
            if not self.bucket.take():
                self._refuse()
                continue
            try:
                self.handle(raw)
            except Exception:  # a bug must cost one frame, not the connection or the process
                log.exception("agent frame failed", extra={"node_id": self.node_id})
                self.send_error("internal_error", "The frame could not be processed.")

    def _refuse(self) -> None:
        now = time.monotonic()
        self.refusals.append(now)
        if len(self.refusals) == REFUSED_BEFORE_CLOSE and now - self.refusals[0] <= REFUSAL_WINDOW:
            log.warning("agent flooding; closing", extra={"node_id": self.node_id})
            self.close(CLOSE_POLICY, "too many frames")
            return
        if now - self.last_refusal_notice >= 1.0:
            self.last_refusal_notice = now
            self.send_error(
                "rate_limited", f"Too many frames: at most {FRAMES_PER_SECOND:g} per second."
            )

    def handle(self, raw: str | bytes) -> None:
        try:
            message = decode_from_agent(raw)
        except ProtocolError as exc:
            self.send_error(exc.code, exc.message, frame_id=exc.frame_id, errors=exc.errors)
            return
        event, data = message.event, message.data
        if event == "ack":
            try:
                commands.ack(self.node_id, data["id"], client=self.bridge.redis)
            except redis.RedisError:  # the command stays queued and comes again on reconnect
                self.send_error(
                    "unavailable", "The ack was not recorded; send it again.", frame_id=message.id
                )
            return
        if event == "error":
            log.warning(
                "agent reported an error", extra={"node_id": self.node_id, "code": data.get("code")}
            )
            return
        if event == "hello":
            self.bridge.hello(self, data)
            return
        if not self.ready:
            self.send_error("hello_expected", "Send hello first.", frame_id=message.id)
            return
        if event == "heartbeat":
            if data["node_id"] != self.node_id:
                self.send_error(
                    "wrong_node", "node_id is not the node of this API key.", frame_id=message.id
                )
                return
            self.bridge.sighting(
                live.Sighting(self.node_id, time.time(), data["status"], data["metrics"])
            )
            return
        self.bridge.agent_event(self, event, data, message.id)


class Bridge:
    def __init__(self, settings: Settings, client: redis.Redis):
        self.settings = settings
        self.redis = client
        self.heartbeat_interval = float(max(1, min(5, settings.heartbeat_timeout_seconds // 4)))
        self.connections: dict[str, AgentConnection] = {}
        self.metrics = MetricsWriter.from_settings(settings, stats_redis=client)
        self.pending: list[live.Sighting] = []
        self.pending_lock = threading.Lock()
        self.pending_ready = threading.Event()
        self.stopping = threading.Event()
        self.heartbeats_stored = 0
        self.heartbeats_lost = 0
        self._actors: dict[str, Any] = {}
        self._sends = threading.BoundedSemaphore(ACTOR_SENDS)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from workers import fleet, rentals

        self._actors = {
            "hello": fleet.record_hello,
            "seen": fleet.node_seen,
            "instance_started": rentals.on_instance_started,
            "instance_failed": rentals.on_instance_failed,
            "instance_stopped": rentals.on_instance_stopped,
        }
        self.metrics.start()
        for target, name in (
            (self._write_loop, "live-writer"),
            (self._listen_loop, "command-listener"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """Close every socket (agents reconnect to another process) and flush what is buffered."""
        self.stopping.set()
        for conn in list(self.connections.values()):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        self.pending_ready.set()
        self._write(self._take_pending())
        self.metrics.stop()

    def serve(
        self, ws: Any, node_id: str, *, draining: bool, tunnel: dict[str, Any] | None = None
    ) -> None:
        conn = AgentConnection(self, ws, node_id, draining=draining, tunnel=tunnel)
        self._attach(conn)
        try:
            conn.serve()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._detach(conn)

    def _attach(self, conn: AgentConnection) -> None:
        # Claim first, register second: a sweep that read the previous owner while the claim was
        # in flight must not find the new connection yet, or it would close it as replaced.
        commands.claim_connection(conn.node_id, conn.token, client=self.redis)
        old = self.connections.get(conn.node_id)
        self.connections[conn.node_id] = conn
        if old is not None:
            old.close(CLOSE_REPLACED, "replaced by a newer connection")

    def _detach(self, conn: AgentConnection) -> None:
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
        try:
            commands.release_connection(conn.node_id, conn.token, client=self.redis)
        except redis.RedisError:
            log.warning("could not release the connection record", exc_info=True)

    # ------------------------------------------------------------------ agent frames
    def hello(self, conn: AgentConnection, data: dict[str, Any]) -> None:
        now = time.time()
        try:
            self.send_to_actor(
                "hello", conn.node_id, data["agent_version"], data["specs"], data["containers"], now
            )
        except redis.RedisError:
            conn.send_error("unavailable", "The platform cannot take the hello now; retry.")
            return
        conn.ready = True
        self.sighting(live.Sighting(conn.node_id, now, agent_version=data["agent_version"]))
        self.deliver_soon(conn)

    def agent_event(
        self, conn: AgentConnection, event: str, data: dict[str, Any], frame_id: str | None
    ) -> None:
        if event == "instance_started":
            args: tuple[Any, ...] = (data["rental_id"], data["container_id"])
        elif event == "instance_failed":
            args = (data["rental_id"], data["reason"])
        else:
            args = (data["rental_id"], data["container_id"], data["exit_code"])
        try:
            self.send_to_actor(event, conn.node_id, *args)
        except redis.RedisError:
            conn.send_error(
                "unavailable",
                f"The platform cannot take {event} now; send it again.",
                frame_id=frame_id,
            )

    def send_to_actor(self, name: str, *args: Any) -> None:
        with self._sends:
            self._actors[name].send(*args)

    def sighting(self, sighting: live.Sighting) -> None:
        with self.pending_lock:
            self.pending.append(sighting)
        self.pending_ready.set()

    # ------------------------------------------------------------------ live data writer
    def _take_pending(self) -> list[live.Sighting]:
        with self.pending_lock:
            batch, self.pending = self.pending, []
        return batch

    def _write_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.pending_ready.wait(1.0):
                continue
            self.pending_ready.clear()
            time.sleep(COALESCE_SECONDS)
            batch = self._take_pending()
            if batch:
                try:
                    self._write(batch)
                except Exception:
                    log.exception("live data write failed")

    def _write(self, batch: list[live.Sighting]) -> None:
        if not batch:
            return
        lines: list[str] = []
        for s in batch:
            if s.metrics is not None:
                lines.extend(heartbeat_lines(s.node_id, int(s.received_at * 1000), s.metrics))
        if lines:
            self.metrics.add(lines)
        try:
            returning = live.write_sightings(self.redis, batch)
        except redis.RedisError as exc:
            self.heartbeats_lost += len(batch)
            log.warning("live data not stored", extra={"count": len(batch), "error": str(exc)})
            return
        self.heartbeats_stored += len(batch)
        latest = {s.node_id: s.received_at for s in batch}
        for node_id in returning:
            try:
                self.send_to_actor("seen", node_id, latest[node_id])
            except redis.RedisError:  # the liveness sweep brings it back a little later
                log.warning("node_seen not sent", extra={"node_id": node_id})

    # ------------------------------------------------------------------ commands
    def deliver_soon(self, conn: AgentConnection) -> None:
        threading.Thread(target=self.deliver, args=(conn,), daemon=True).start()

    def deliver(self, conn: AgentConnection) -> int:
        """Send the node's unacked commands that this connection has not sent yet."""
        sent = 0
        if not conn.ready or conn.closed:
            return sent
        with conn.deliver_lock:
            while not conn.closed:
                try:
                    entries = commands.pending(
                        conn.node_id,
                        after=conn.last_sent_id,
                        count=DELIVERY_PAGE,
                        client=self.redis,
                    )
                except redis.RedisError:
                    log.warning("command stream unreadable", extra={"node_id": conn.node_id})
                    return sent  # the sweep tries again
                for entry_id, frame in entries:
                    if not conn.send(frame):
                        return sent
                    conn.last_sent_id = entry_id
                    sent += 1
                if len(entries) < DELIVERY_PAGE:
                    break
        return sent

    def _listen_loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(commands.COMMANDS_CHANNEL, commands.CONNECTIONS_CHANNEL)
                self._sweep()  # anything announced while this process was not subscribed
                next_sweep = time.monotonic() + SWEEP_SECONDS
                backoff = 0.5
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_message(message["channel"], message["data"])
                    if time.monotonic() >= next_sweep:
                        self._sweep()
                        next_sweep = time.monotonic() + SWEEP_SECONDS
            except (redis.RedisError, OSError) as exc:
                log.warning("command listener lost Redis; reconnecting", extra={"error": str(exc)})
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("command listener failed")
                self.stopping.wait(backoff)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _on_message(self, channel: str, payload: str) -> None:
        if channel == commands.COMMANDS_CHANNEL:
            conn = self.connections.get(payload)
            if conn is not None and conn.ready:
                self.deliver_soon(conn)
            return
        try:
            notice = json.loads(payload)
            node_id = str(notice["node_id"])
        except (ValueError, KeyError, TypeError):
            return
        conn = self.connections.get(node_id)
        if conn is None:
            return
        if notice.get("revoke"):
            conn.close(CLOSE_REVOKED, "the node's API key was rotated")
            return
        owner = commands.connection_owner(node_id, client=self.redis)
        if owner is not None and owner != conn.token:
            conn.close(CLOSE_REPLACED, "replaced by a newer connection")

    def _sweep(self) -> None:
        """Per local connection: any command not yet sent? still the node's live connection?"""
        conns = [c for c in list(self.connections.values()) if not c.closed]
        for start in range(0, len(conns), SWEEP_CHUNK):
            if start:
                time.sleep(0)  # let heartbeats through between chunks
            chunk = conns[start : start + SWEEP_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for conn in chunk:
                low = "-" if conn.last_sent_id is None else f"({conn.last_sent_id}"
                pipe.xrange(commands.stream_key(conn.node_id), min=low, max="+", count=1)
                pipe.get(commands.owner_key(conn.node_id))
            replies = pipe.execute()
            for i, conn in enumerate(chunk):
                entries, owner = replies[2 * i], replies[2 * i + 1]
                if owner is None:  # the record was lost (Redis restarted): this one stands
                    self.redis.set(
                        commands.owner_key(conn.node_id),
                        conn.token,
                        nx=True,
                        ex=commands.OWNER_TTL_SECONDS,
                    )
                elif owner != conn.token:
                    conn.close(CLOSE_REPLACED, "replaced by a newer connection")
                    continue
                if entries and conn.ready:
                    self.deliver_soon(conn)


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
