"""Heartbeat metrics in InfluxDB: line protocol, the batching writer and the downsampled query.

One measurement, ``node_metrics``, with fixed tag keys: ``node_id`` on every point and ``gpu`` (the
GPU index) on per-GPU points; node-wide values (CPU, RAM, disk) are points without ``gpu``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from app.config import Settings, get_settings
from app.influx import InfluxClient, InfluxError

log = logging.getLogger(__name__)

MEASUREMENT = "node_metrics"
NODE_FIELDS = ("cpu_temp", "cpu_utilization", "ram_usage_mb", "disk_usage_gb")
GPU_FIELDS = ("gpu_temp", "gpu_utilization", "gpu_memory_used_mb", "gpu_power_w")
STATS_KEY = "dc:fleet:metrics_stats"  # points/batches written and dropped, for operators


def heartbeat_lines(node_id: str, at_ms: int, metrics: dict[str, Any]) -> list[str]:
    """Line protocol for one heartbeat: a node-wide point and one point per GPU.

    Written out by hand, as influxdb-client's `Point` would write it (tags and fields sorted,
    whole floats without ".0", non-finite values left out): this runs for every heartbeat, and
    building `Point` objects cost more than the rest of the heartbeat's path put together.
    """
    lines: list[str] = []
    tags = f"node_id={_escape_tag(node_id)}"
    values = [_field(name, metrics.get(name)) for name in _NODE_FIELDS_SORTED]
    fields = ",".join(v for v in values if v)
    if fields:
        lines.append(f"{MEASUREMENT},{tags} {fields} {at_ms}")
    series = [metrics.get(name) or () for name in _GPU_FIELDS_SORTED]
    for index in range(max((len(s) for s in series), default=0)):
        values = [
            _field(name, s[index] if index < len(s) else None)
            for name, s in zip(_GPU_FIELDS_SORTED, series, strict=True)
        ]
        fields = ",".join(v for v in values if v)
        if fields:
            lines.append(f"{MEASUREMENT},gpu={index},{tags} {fields} {at_ms}")
    return lines


_NODE_FIELDS_SORTED = sorted(NODE_FIELDS)
_GPU_FIELDS_SORTED = sorted(GPU_FIELDS)
_TAG_ESCAPES = str.maketrans(
    {",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
)


def _escape_tag(value: str) -> str:
    escaped = value.translate(_TAG_ESCAPES)
    return escaped + " " if escaped.endswith("\\") else escaped


def _field(name: str, value: Any) -> str:
    """`name=value` for a float field; "" for a missing or non-finite value."""
    if value is None:
        return ""
    number = float(value)
    if not math.isfinite(number):
        return ""
    text = repr(number)
    return f"{name}={text[:-2] if text.endswith('.0') else text}"


class MetricsWriter:
    """Buffers line-protocol points and writes them in batches: by size or every few seconds.

    Runs one background thread (a greenlet under gevent). While InfluxDB is unreachable the
    buffer keeps up to `max_buffer` points, dropping the oldest beyond that.
    """

    def __init__(
        self,
        client: InfluxClient,
        *,
        batch_size: int,
        flush_seconds: float,
        retention: str,
        max_buffer: int | None = None,
        stats_redis: Any = None,
    ):
        self.client = client
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retention = retention
        self.buffer: deque[str] = deque(maxlen=max_buffer or batch_size * 50)
        self.stats_redis = stats_redis
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.database_ready = False
        self.points_written = 0
        self.batches_written = 0
        self.points_dropped = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> MetricsWriter:
        s = settings or get_settings()
        return cls(
            InfluxClient.from_settings(s),
            batch_size=s.metrics_batch_size,
            flush_seconds=s.metrics_flush_seconds,
            retention=s.influxdb_retention,
            **kwargs,
        )

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-writer", daemon=True)
            self._thread.start()

    def add(self, lines: list[str]) -> None:
        overflow = len(self.buffer) + len(lines) - (self.buffer.maxlen or 0)
        if overflow > 0:
            self.points_dropped += overflow
        self.buffer.extend(lines)
        if len(self.buffer) >= self.batch_size:
            self.wakeup.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()

    def flush(self) -> int:
        """Write what is buffered now, in batches; return the points written.

        Points that arrive while writing wait for the next flush, so a slow write does not
        turn into a trickle of small batches.
        """
        written = 0
        with self._lock:
            if not self.database_ready:
                self._ensure_database()
            due = len(self.buffer)
            while due > 0 and self.buffer and self.database_ready:
                batch = [
                    self.buffer.popleft()
                    for _ in range(min(self.batch_size, due, len(self.buffer)))
                ]
                due -= len(batch)
                try:
                    self.client.write_lines(batch)
                except InfluxError as exc:
                    self.buffer.extendleft(reversed(batch))  # keep order; retried next time
                    log.warning("metrics write failed; will retry", extra={"error": str(exc)})
                    break
                written += len(batch)
                self.points_written += len(batch)
                self.batches_written += 1
                self._record(points=len(batch), batches=1)
        return written

    def _ensure_database(self) -> None:
        try:
            self.client.ensure_database(self.retention)
        except InfluxError as exc:
            log.warning("cannot prepare the metrics database yet", extra={"error": str(exc)})
            return
        self.database_ready = True

    def _record(self, **counts: int) -> None:
        if self.stats_redis is None:
            return
        try:
            pipe = self.stats_redis.pipeline(transaction=False)
            for name, value in counts.items():
                pipe.hincrby(STATS_KEY, name, value)
            pipe.execute()
        except Exception:  # counters are informational
            log.debug("could not record metrics stats", exc_info=True)

    def _run(self) -> None:
        self._ensure_database()
        next_flush = time.monotonic() + self.flush_seconds
        while not self.stopping.is_set():
            self.wakeup.wait(max(0.0, next_flush - time.monotonic()))
            self.wakeup.clear()
            if len(self.buffer) < self.batch_size and time.monotonic() < next_flush:
                continue
            next_flush = time.monotonic() + self.flush_seconds
            try:
                self.flush()
            except Exception:
                log.exception("metrics flush failed")


# ------------------------------------------------------------------------------ reading
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_POINTS = 1000
MIN_EVERY_SECONDS = 5
MAX_SINCE_SECONDS = 90 * 86400


def parse_duration(value: str) -> int:
    """'90s', '5m', '1h', '7d', '2w' -> seconds. Raises ValueError otherwise."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(value)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def default_every(since_seconds: int) -> int:
    """About 300 buckets, at least a minute each, rounded to whole minutes."""
    return max(60, -(-since_seconds // 300 // 60) * 60)


def query_series(
    client: InfluxClient, *, node_id: str, since_seconds: int, every_seconds: int
) -> dict[str, Any]:
    """Means per time bucket over the window: node-wide fields and per-GPU fields."""
    selects = ", ".join(f'mean("{name}") AS "{name}"' for name in NODE_FIELDS + GPU_FIELDS)
    q = (
        f'SELECT {selects} FROM "{MEASUREMENT}" WHERE "node_id" = $node_id '
        f"AND time > now() - {since_seconds}s AND time <= now() "
        f'GROUP BY time({every_seconds}s), "gpu" fill(none)'
    )
    try:
        body = client.query(q, params={"node_id": node_id})
    except InfluxError as exc:
        if "database not found" in str(exc):
            return {"node": [], "gpus": []}
        raise
    node_points: list[dict[str, Any]] = []
    gpus: dict[int, list[dict[str, Any]]] = {}
    for result in body.get("results", []):
        for series in result.get("series", []) or []:
            gpu = (series.get("tags") or {}).get("gpu") or ""
            columns = series["columns"]
            wanted = GPU_FIELDS if gpu else NODE_FIELDS
            points = []
            for row in series["values"]:
                values = dict(zip(columns, row, strict=True))
                point: dict[str, Any] = {"time": datetime.fromtimestamp(values["time"] / 1000, UTC)}
                point.update({name: values.get(name) for name in wanted})
                points.append(point)
            if gpu:
                gpus[int(gpu)] = points
            else:
                node_points = points
    return {
        "node": node_points,
        "gpus": [{"index": index, "points": gpus[index]} for index in sorted(gpus)],
    }


_reader: InfluxClient | None = None


def reader() -> InfluxClient:
    """The process's InfluxDB client for queries (one pooled HTTP session)."""
    global _reader
    if _reader is None:
        _reader = InfluxClient.from_settings()
    return _reader
