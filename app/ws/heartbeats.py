"""The heartbeat batch writer: every sighting of this process goes to Redis in one pipeline per
batch (live hash, last-seen set) and to the InfluxDB batch writer; no database write."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from app.fleet import live
from app.fleet.metrics import MetricsWriter, heartbeat_lines

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.020  # let heartbeats that arrive together share one Redis round trip


class HeartbeatWriter:
    def __init__(
        self,
        client: redis.Redis,
        metrics: MetricsWriter,
        stopping: threading.Event,
        *,
        on_back: Callable[[str, float], None],
    ):
        """`on_back(node_id, seen_at)` is called for a node that had been marked offline."""
        self.redis = client
        self.metrics = metrics
        self.stopping = stopping
        self.on_back = on_back
        self.pending: list[live.Sighting] = []
        self.pending_lock = threading.Lock()
        self.pending_ready = threading.Event()
        self.ttl_set: dict[str, float] = {}  # node -> when its live hash's TTL was last set

    def add(self, sighting: live.Sighting) -> None:
        with self.pending_lock:
            self.pending.append(sighting)
        self.pending_ready.set()

    def flush(self) -> None:
        """Write what is buffered now (at shutdown)."""
        self.pending_ready.set()
        self._write(self._take_pending())

    def _take_pending(self) -> list[live.Sighting]:
        with self.pending_lock:
            batch, self.pending = self.pending, []
        return batch

    def write_loop(self) -> None:
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
            returning = live.write_sightings(self.redis, batch, self.ttl_set)
        except redis.RedisError as exc:
            log.warning("live data not stored", extra={"count": len(batch), "error": str(exc)})
            return
        latest = {s.node_id: s.received_at for s in batch}
        for node_id in returning:
            self.on_back(node_id, latest[node_id])
