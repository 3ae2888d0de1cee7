"""What this process knows about its node: the platform's welcome, and a lock per rental.

Shared by the session loop, the command handlers and the exit watcher; the container engine stays
the only record of the rentals themselves.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("agent")


class NodeState:
    def __init__(self, heartbeat_interval: float):
        self.node_id: str | None = None
        self.draining = False
        self.tunnel: dict[str, Any] | None = None
        self.heartbeat_interval = heartbeat_interval
        self.busy = False  # a rental container was running at the engine's last look
        self.features: frozenset[str] = frozenset()  # optional events the platform understands
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def rental_lock(self, rental_id: str) -> threading.Lock:
        """One lock per rental: a command and the exit watcher never handle it at once."""
        with self._locks_guard:
            return self._locks.setdefault(rental_id, threading.Lock())

    def forget(self, rental_id: str) -> None:
        """Drop a finished rental's lock so that the table does not grow without end."""
        with self._locks_guard:
            lock = self._locks.get(rental_id)
            if lock is not None and not lock.locked():
                del self._locks[rental_id]

    def apply_welcome(self, data: dict[str, Any]) -> None:
        """Take the platform's word on who this node is and how it should behave."""
        if self.node_id is not None and self.node_id != data["node_id"]:
            log.warning(
                "the API key now belongs to node %s (was %s)", data["node_id"], self.node_id
            )
        self.node_id = data["node_id"]
        if data.get("heartbeat_interval"):
            self.heartbeat_interval = float(data["heartbeat_interval"])
        self.draining = bool(data.get("draining"))
        if data.get("tunnel"):
            self.tunnel = dict(data["tunnel"])
        self.features = frozenset(data.get("features") or ())

    def understands(self, event: str) -> bool:
        return event in self.features
