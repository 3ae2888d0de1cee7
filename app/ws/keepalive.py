"""Pings for every agent socket of this process, sent by one loop.

simple_websocket can ping each socket itself (`ping_interval`), but then its reader waits on a
selector with a timeout before every read: a watcher and a timer set up and torn down for every
frame of every socket, a tenth of the socket server's time at a few thousand agents. The
platform's sockets are read with plain blocking reads instead, and this loop pings each one
every PING_SECONDS; a socket that has not answered the previous ping by then is closed with 1008,
as simple_websocket closes it.
"""

from __future__ import annotations

import logging
import threading
import time

from app.ws.connection import PING_SECONDS
from app.ws.registry import ConnectionRegistry

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # each connection's ping falls due PING_SECONDS after its last one


class KeepAlive:
    def __init__(self, registry: ConnectionRegistry, stopping: threading.Event):
        self.registry = registry
        self.stopping = stopping

    def loop(self) -> None:
        while not self.stopping.wait(TICK_SECONDS):
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("agent pings failed")

    def tick(self, now: float) -> int:
        """Ping the connections whose ping is due; return how many were due."""
        due = 0
        for conn in self.registry.open_connections():
            if conn.next_ping <= now:
                due += 1
                conn.next_ping = now + PING_SECONDS
                conn.ping()
        return due
