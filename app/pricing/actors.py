"""Pricing actors: auto-match repricing, and the reliability figures the marketplace shows."""

from __future__ import annotations

import logging

from app.db import session_scope
from app.marketplace.cache import invalidate_offers
from app.marketplace.reliability import refresh_reliability
from app.pricing.service import auto_match_node_ids, reprice_nodes
from app.queue.actors import actor
from app.queue.periodic import PeriodicJob, register

log = logging.getLogger(__name__)
BATCH = 200


@actor(queue_name="pricing", max_retries=3, time_limit=600_000)
def reprice_auto_match_nodes() -> None:
    """Move every auto-matching node to its market rate (idempotent: unchanged rates stay)."""
    with session_scope() as session:
        node_ids = auto_match_node_ids(session)
    changed = 0
    # Small transactions: row locks are held briefly, and a host's edit is not blocked long.
    for start in range(0, len(node_ids), BATCH):
        with session_scope() as session:
            changed += len(reprice_nodes(session, node_ids=node_ids[start : start + BATCH]))
    log.info("auto-match repricing done", extra={"nodes": len(node_ids), "changed": changed})


@actor(queue_name="pricing", max_retries=3, time_limit=300_000)
def refresh_node_reliability() -> None:
    """Recompute every node's 7-day uptime fraction shown in offers."""
    with session_scope() as session:
        rows = refresh_reliability(session)
    invalidate_offers()
    log.info("reliability refreshed", extra={"nodes": rows})


PERIODIC_JOBS = register(
    PeriodicJob(reprice_auto_match_nodes, lambda settings: settings.pricing_interval_seconds),
    PeriodicJob(refresh_node_reliability, lambda settings: settings.reliability_interval_seconds),
)
