"""Prometheus metrics: HTTP requests of this process, plus the platform's state read per scrape.

HTTP counts and latencies live in this process (with gunicorn running several workers, set
PROMETHEUS_MULTIPROC_DIR so they are summed across them). Everything else is read when scraped:
queue counts and workers from the broker's Redis data, actor runs from the counters the worker
middleware keeps in Redis (one scrape target for every worker process), agents and heartbeats
from fleet's Redis keys, nodes, rentals and billing lag from PostgreSQL, webhook delivery results
from the counter the delivery actor keeps in Redis.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from app.config import get_settings
from app.db import new_session, utcnow
from app.ops import vitals
from app.ops.queues import QueueInspector, platform_queues
from app.queue.recorder import ACTOR_STATS_KEY, DURATION_BUCKETS
from app.redis_client import get_redis
from app.webhooks.delivery import result_counts

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "dc_http_requests",
    "HTTP requests served, by endpoint and status.",
    ["method", "endpoint", "status"],
)
HTTP_LATENCY = Histogram(
    "dc_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint.",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, endpoint: str, status: int, seconds: float) -> None:
    # The labelled children, looked up once per (method, endpoint, status) rather than through
    # labels() on every request: there are as many as routes times statuses, a few hundred.
    key = (method, endpoint, status)
    children = _children.get(key)
    if children is None:
        label = method if method in _METHODS else "OTHER"
        children = (
            HTTP_REQUESTS.labels(label, endpoint, str(status)),
            HTTP_LATENCY.labels(label, endpoint),
        )
        if method in _METHODS:  # any other method is OTHER: not one entry per made-up name
            _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


class PlatformCollector:
    """Reads Redis and PostgreSQL on each scrape; a failing source is reported, not raised."""

    def collect(self) -> Iterator[Metric]:
        settings = get_settings()
        client = get_redis()
        up = GaugeMetricFamily(
            "dc_metrics_source_up",
            "1 when the source could be read for this scrape.",
            labels=["source"],
        )
        for source, reader in (
            ("broker", self._broker),
            ("actors", self._actors),
            ("agents", self._agents),
            ("jobs", self._jobs),
            ("database", self._database),
            ("webhooks", self._webhooks),
        ):
            try:
                metrics = list(reader(client, settings))
            except Exception:
                log.warning("metrics source failed", extra={"source": source}, exc_info=True)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        yield up

    def _broker(self, client: Any, settings: Any) -> Iterator[Metric]:
        inspector = QueueInspector(client, known_queues=platform_queues())
        names = inspector.queue_names()
        families = {
            "ready": GaugeMetricFamily(
                "dc_queue_depth", "Messages ready in the queue.", labels=["queue"]
            ),
            "delayed": GaugeMetricFamily(
                "dc_queue_delayed",
                "Messages waiting for their time (retries, delays).",
                labels=["queue"],
            ),
            "in_flight": GaugeMetricFamily(
                "dc_queue_in_flight",
                "Messages fetched by a worker and not acked yet.",
                labels=["queue"],
            ),
            "dead": GaugeMetricFamily(
                "dc_queue_dead_letters", "Messages in the dead-letter queue.", labels=["queue"]
            ),
        }
        for stats in inspector.stats(names):
            for attr, family in families.items():
                family.add_metric([stats.name], getattr(stats, attr))
        yield from families.values()
        workers = GaugeMetricFamily(
            "dc_dramatiq_workers",
            "Worker processes seen, by whether their heartbeat is recent.",
            labels=["state"],
        )
        seen = [w for w in inspector.workers(names) if w.role == "worker"]
        workers.add_metric(["alive"], sum(1 for w in seen if w.alive))
        workers.add_metric(["stale"], sum(1 for w in seen if not w.alive))
        yield workers

    def _actors(self, client: Any, settings: Any) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "dc_actor_messages",
            "Actor runs by outcome: ok, error, skipped.",
            labels=["actor", "queue", "outcome"],
        )
        dead = CounterMetricFamily(
            "dc_actor_dead_lettered",
            "Messages moved to the dead-letter queue.",
            labels=["actor", "queue"],
        )
        durations = HistogramMetricFamily(
            "dc_actor_duration_seconds", "Time an actor run took.", labels=["actor", "queue"]
        )
        buckets: dict[tuple[str, str], list[int]] = {}
        sums: dict[tuple[str, str], float] = {}
        for field, value in client.hgetall(ACTOR_STATS_KEY).items():
            kind, _, rest = field.partition("|")
            parts = rest.split("|")
            if kind == "n" and len(parts) == 3:
                runs.add_metric(parts, int(value))
            elif kind == "d" and len(parts) == 2:
                dead.add_metric(parts, int(value))
            elif kind == "s" and len(parts) == 2:
                sums[(parts[0], parts[1])] = float(value)
            elif kind == "b" and len(parts) == 3 and parts[2].isdigit():
                index = int(parts[2])
                counts = buckets.setdefault((parts[0], parts[1]), [0] * (len(DURATION_BUCKETS) + 1))
                if index < len(counts):
                    counts[index] += int(value)
        for key, counts in sorted(buckets.items()):
            cumulative, series = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                series.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric(list(key), series, sum_value=sums.get(key, 0.0))
        yield runs
        yield dead
        yield durations

    def _agents(self, client: Any, settings: Any) -> Iterator[Metric]:
        agents = vitals.agent_vitals(client, timeout_s=settings.heartbeat_timeout_seconds)
        yield GaugeMetricFamily(
            "dc_agents_connected",
            "Agents with a heartbeat within HEARTBEAT_TIMEOUT_SECONDS.",
            value=agents.connected,
        )
        yield CounterMetricFamily(
            "dc_agent_heartbeats",
            "Agent heartbeats received.",
            value=vitals.heartbeats_total(client),
        )
        yield GaugeMetricFamily(
            "dc_agent_command_oldest_unacked_seconds",
            "Age of the oldest command no agent has acked yet (0: none).",
            value=agents.oldest_command_age_s or 0.0,
        )

    def _jobs(self, client: Any, settings: Any) -> Iterator[Metric]:
        last_run = GaugeMetricFamily(
            "dc_job_last_run_timestamp_seconds",
            "When each periodic job last finished (epoch seconds).",
            labels=["job", "queue"],
        )
        last_sent = GaugeMetricFamily(
            "dc_job_last_sent_timestamp_seconds",
            "When the scheduler last sent each periodic job.",
            labels=["job", "queue"],
        )
        for job in vitals.periodic_jobs(client, settings):
            if job["last_run"] is not None:
                last_run.add_metric([job["name"], job["queue"]], job["last_run"])
            if job["last_sent"] is not None:
                last_sent.add_metric([job["name"], job["queue"]], job["last_sent"])
        yield last_run
        yield last_sent

    def _database(self, client: Any, settings: Any) -> Iterator[Metric]:
        session = new_session()
        try:
            nodes = vitals.nodes_by_status(session)
            rentals = vitals.rentals_by_status(session)
            gpus = vitals.gpus_in_use(session)
            lag = vitals.billing_lag_seconds(session, utcnow())
        finally:
            session.close()
        family = GaugeMetricFamily("dc_nodes", "Host nodes by status.", labels=["status"])
        for status, count in nodes.items():
            family.add_metric([status], count)
        yield family
        family = GaugeMetricFamily("dc_rentals", "Rentals by status.", labels=["status"])
        for status, count in rentals.items():
            family.add_metric([status], count)
        yield family
        family = GaugeMetricFamily(
            "dc_gpus",
            "GPUs of the nodes not offline, by whether a rental holds them.",
            labels=["state"],
        )
        family.add_metric(["in_use"], gpus["in_use"])
        family.add_metric(["free"], gpus["total"] - gpus["in_use"])
        yield family
        yield GaugeMetricFamily(
            "dc_billing_lag_seconds",
            "Now minus the oldest billing watermark of any active rental.",
            value=lag,
        )

    def _webhooks(self, client: Any, settings: Any) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "dc_webhook_deliveries",
            "Webhook delivery attempts by result (delivered, http_error, timeout, ...).",
            labels=["result"],
        )
        for result, count in sorted(result_counts(client).items()):
            family.add_metric([result], count)
        yield family


_PLATFORM = CollectorRegistry(auto_describe=False)
_PLATFORM.register(PlatformCollector())  # type: ignore[arg-type]


def render() -> tuple[bytes, str]:
    """The exposition text: this process's (or all gunicorn workers') HTTP metrics, then the rest."""
    started = time.perf_counter()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        base = generate_latest(registry)
    else:
        base = generate_latest(REGISTRY)
    body = base + generate_latest(_PLATFORM)
    took = time.perf_counter() - started
    body += (
        b"# HELP dc_metrics_scrape_seconds Time this scrape took to collect.\n"
        b"# TYPE dc_metrics_scrape_seconds gauge\n"
        + f"dc_metrics_scrape_seconds {took:.6f}\n".encode()
    )
    return body, CONTENT_TYPE_LATEST
