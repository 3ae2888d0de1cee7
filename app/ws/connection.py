"""One agent's socket: its receive loop, the frame rate limit, and sending frames to it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from simple_websocket import ConnectionClosed
from wsproto.events import Ping
from wsproto.utilities import LocalProtocolError

from agent.protocol import OPTIONAL_AGENT_EVENTS, encode, error_frame

log = logging.getLogger(__name__)

FEATURES = OPTIONAL_AGENT_EVENTS  # instance_progress and logs: both handled
HELLO_TIMEOUT_SECONDS = 30.0
PING_SECONDS = 25.0  # app/ws/keepalive.py pings each socket this often
# An agent sends a heartbeat every few seconds and the odd event: allow bursts, refuse floods.
FRAMES_PER_SECOND = 10.0
FRAME_BURST = 50
REFUSED_BEFORE_CLOSE = 100  # refused frames within REFUSAL_WINDOW seconds: the agent is cut off
REFUSAL_WINDOW = 10.0

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_REPLACED = 4000
CLOSE_REVOKED = 4001
CLOSE_RECONNECT = 4002  # the platform asks the agent to reconnect (new welcome, new hello)


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
        ws: Any,
        node_id: str,
        *,
        draining: bool,
        heartbeat_interval: float,
        tunnel: dict[str, Any] | None = None,
        key_id: str | None = None,
        max_containers: int = 500,
    ):
        self.ws = ws
        self.node_id = node_id
        self.key_id = key_id  # the API key record it authenticated with (checked by the sweep)
        self.max_containers = max_containers  # containers one hello may report
        self.said_hello = False  # one hello per connection
        self.draining = draining
        self.heartbeat_interval = heartbeat_interval
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
        self.next_ping = time.monotonic() + PING_SECONDS

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
        self._stop_receiving()
        return False

    def ping(self) -> None:
        """Ping the agent; close the socket (1008) if it did not answer the previous ping.

        What simple_websocket's reader does when it is given a `ping_interval` (the platform
        does not give it one: see app/ws/keepalive.py), with its connection objects.
        """
        if not self.ws.pong_received:
            self.close(CLOSE_POLICY, "Ping/Pong timeout")
            return
        with self.send_lock:
            if self.closed:
                return
            self.ws.pong_received = False
            try:
                self.ws.sock.send(self.ws.ws.send(Ping()))
                return
            except (LocalProtocolError, OSError):
                self.closed = True
        self._stop_receiving()

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
        self._stop_receiving()

    def _stop_receiving(self) -> None:
        # The handler waits in receive() without a timeout; receive() returns (raising
        # ConnectionClosed) once the socket is marked disconnected and its event is set.
        self.ws.connected = False
        self.ws.event.set()

    # ------------------------------------------------------------------ receiving
    def serve(self, handle: Callable[[AgentConnection, str | bytes], None]) -> None:
        """Receive frames until the socket closes; `handle` does what each one asks."""
        welcome: dict[str, Any] = {
            "node_id": self.node_id,
            "draining": self.draining,
            "heartbeat_interval": self.heartbeat_interval,
            # The optional agent events this platform dispatches (app/ws/dispatch.py).
            "features": list(FEATURES),
        }
        if self.tunnel is not None:
            welcome["tunnel"] = self.tunnel
        self.send(encode("welcome", welcome))
        hello_deadline = time.monotonic() + HELLO_TIMEOUT_SECONDS
        while not self.closed:
            if self.ready:
                # No timer per frame: a close, ours (close() sets the event) or the peer's
                # (the socket's reader does), wakes this wait.
                raw = self.ws.receive()
            else:
                raw = self.ws.receive(timeout=max(0.0, hello_deadline - time.monotonic()))
            if raw is None:
                if not self.ready and time.monotonic() >= hello_deadline:
                    self.close(CLOSE_POLICY, "hello expected")
                continue
            if not self.bucket.take():
                self._refuse()
                continue
            try:
                handle(self, raw)
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
