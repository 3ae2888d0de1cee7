"""Smart pricing: a suggested hourly rate for a node, from the market or from the baseline.

The formula (documented in docs/pricing-baseline.md):

* Comparable nodes: **verified** GPU nodes (their agent detected at least the declared hardware)
  with the same GPU model (ignoring case) that are online or busy, the node itself excluded.
  Registering nodes is free, so unverified ones would let anyone move the market.
* Market sample: the per-GPU prices (hourly_rate / gpu_count) of the comparable nodes whose price
  the host set (auto-matching nodes are left out, or the job would chase its own output), with
  outliers trimmed on the log scale (prices are compared as ratios): a price whose log is further
  than OUTLIER_MADS scaled median absolute deviations (1.4826 x MAD of the logs, at least
  MIN_LOG_SPREAD) from the median log is left out. With honest prices from 0.30 to 0.60 that
  keeps roughly 0.19 to 0.98 and drops a 0.0001 or a 50.
  p25, median and p75 use linear interpolation and are scaled to this node's gpu_count.
* Basis: "market" (the median) when the sample holds at least MIN_SAMPLES prices, otherwise
  "baseline" (app.pricing.baseline: a reference price per GPU model; CPU-only nodes per core and
  per GB of RAM).
* Demand, per GPU: b = GPUs rented / GPUs of the comparable nodes (auto-matching ones included;
  a node's rentals may hold some of its GPUs). With at least MIN_SAMPLES comparable nodes the
  basis price is multiplied by
  1 + MAX_SURGE * (b - 0.5) / 0.5 when b >= 0.5 (up to +20 % when all are busy), and
  1 - MAX_DISCOUNT * (0.5 - b) / 0.5 when b < 0.5 (down to -10 % when none is); else by 1.
* suggested = quantize(basis price * multiplier), at least PRICING_FLOOR_HOURLY_RATE (a
  platform setting); auto-matching never sets a node below its own min_hourly_rate either.

Functions never commit.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.enums import NodeStatus
from app.fleet.events import node_changed
from app.fleet.models import HostNode
from app.money import quantize, to_wire
from app.pricing.baseline import BaselinePrice, cpu_baseline, gpu_baseline
from app.pricing.models import PriceChange

MIN_SAMPLES = 5
TARGET_BUSY = Decimal("0.5")
MAX_SURGE = Decimal("0.20")
MAX_DISCOUNT = Decimal("0.10")
SMALLEST_RATE = Decimal("0.0001")
OUTLIER_MADS = Decimal(3)
MAD_SCALE = Decimal("1.4826")  # makes the MAD estimate a standard deviation for normal data
MIN_LOG_SPREAD = 0.05


@dataclass(frozen=True)
class Peer:
    id: uuid.UUID
    per_gpu: Decimal
    gpus: int
    gpus_in_use: int
    auto_match: bool


@dataclass(frozen=True)
class MarketStats:
    sample_size: int
    p25: Decimal | None
    median: Decimal | None
    p75: Decimal | None


@dataclass(frozen=True)
class Demand:
    similar_nodes: int
    busy_nodes: int  # every GPU rented
    busy_fraction: Decimal | None  # rented GPUs / GPUs
    multiplier: Decimal
    gpus: int = 0
    gpus_in_use: int = 0


@dataclass(frozen=True)
class Suggestion:
    suggested_hourly_rate: Decimal
    basis: str  # "market" | "baseline"
    market: MarketStats
    demand: Demand
    baseline: BaselinePrice | None

    def to_dict(self) -> dict[str, Any]:
        def money(value: Decimal | None) -> str | None:
            return None if value is None else to_wire(value)

        return {
            "suggested_hourly_rate": to_wire(self.suggested_hourly_rate),
            "basis": self.basis,
            "market": {
                "sample_size": self.market.sample_size,
                "p25": money(self.market.p25),
                "median": money(self.market.median),
                "p75": money(self.market.p75),
            },
            "demand": {
                "similar_nodes": self.demand.similar_nodes,
                "busy_nodes": self.demand.busy_nodes,
                "gpus": self.demand.gpus,
                "gpus_in_use": self.demand.gpus_in_use,
                "busy_fraction": (
                    None
                    if self.demand.busy_fraction is None
                    else float(round(self.demand.busy_fraction, 4))
                ),
                "multiplier": str(self.demand.multiplier),
            },
            "baseline": (
                None
                if self.baseline is None
                else {
                    "reference": self.baseline.reference,
                    "unit_price": to_wire(self.baseline.per_unit),
                }
            ),
        }


def percentile(sorted_values: Sequence[Decimal], fraction: Decimal) -> Decimal:
    """Linear interpolation between closest ranks (as PostgreSQL's percentile_cont)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * weight


def trim_outliers(sorted_values: Sequence[Decimal]) -> list[Decimal]:
    """The values within OUTLIER_MADS scaled MADs of their median, on the log scale (see the
    module docstring). Only decides what to keep: the kept values are returned unchanged."""
    if len(sorted_values) < 3:
        return list(sorted_values)
    logs = [math.log(max(float(v), 1e-9)) for v in sorted_values]
    median = statistics.median(logs)
    mad = statistics.median(abs(x - median) for x in logs)
    spread = max(float(MAD_SCALE) * mad, MIN_LOG_SPREAD)
    limit = float(OUTLIER_MADS) * spread
    return [v for v, x in zip(sorted_values, logs, strict=True) if abs(x - median) <= limit]


def demand_multiplier(
    similar: int, busy: int, *, gpus: int | None = None, gpus_in_use: int | None = None
) -> tuple[Decimal | None, Decimal]:
    """(busy fraction, price multiplier) for the comparable nodes; 1 when too few to judge.

    With `gpus` the fraction is of GPUs (`gpus_in_use / gpus`), else of whole nodes."""
    if similar == 0:
        return None, Decimal(1)
    if gpus:
        fraction = Decimal(gpus_in_use or 0) / Decimal(gpus)
    else:
        fraction = Decimal(busy) / Decimal(similar)
    if similar < MIN_SAMPLES:
        return fraction, Decimal(1)
    if fraction >= TARGET_BUSY:
        multiplier = 1 + MAX_SURGE * (fraction - TARGET_BUSY) / (1 - TARGET_BUSY)
    else:
        multiplier = 1 - MAX_DISCOUNT * (TARGET_BUSY - fraction) / TARGET_BUSY
    return fraction, multiplier.quantize(Decimal("0.0001"))


class SmartPricingService:
    """Suggests prices from a snapshot of the market, loaded once per GPU model per instance."""

    def __init__(self, session: Session, *, floor: Decimal | None = None):
        self.session = session
        self.floor = max(
            SMALLEST_RATE, get_settings().pricing_floor_hourly_rate if floor is None else floor
        )
        self._peers: dict[str, list[Peer]] = {}

    def peers(self, gpu_model: str) -> list[Peer]:
        key = gpu_model.lower()
        if key not in self._peers:
            rows = self.session.execute(
                select(
                    HostNode.id,
                    HostNode.hourly_rate,
                    HostNode.gpu_count,
                    HostNode.gpus_in_use,
                    HostNode.auto_match_market,
                ).where(
                    func.lower(HostNode.gpu_model) == key,
                    HostNode.gpu_count > 0,
                    HostNode.verified.is_(True),
                    HostNode.status.in_([NodeStatus.ONLINE, NodeStatus.BUSY]),
                )
            ).all()
            self._peers[key] = [
                Peer(
                    id=row.id,
                    per_gpu=Decimal(row.hourly_rate) / row.gpu_count,
                    gpus=int(row.gpu_count),
                    gpus_in_use=min(int(row.gpus_in_use), int(row.gpu_count)),
                    auto_match=bool(row.auto_match_market),
                )
                for row in rows
            ]
        return self._peers[key]

    def suggest(self, node: HostNode) -> Suggestion:
        """The suggested hourly rate for the whole node, with the figures behind it."""
        gpu_count = int(node.specs.get("gpu_count") or 0)
        if gpu_count == 0:
            baseline = cpu_baseline(
                int(node.specs["cpu_cores"]), Decimal(str(node.specs["ram_gb"]))
            )
            return Suggestion(
                self._floored(baseline.per_unit),
                "baseline",
                MarketStats(0, None, None, None),
                Demand(0, 0, None, Decimal(1)),
                baseline,
            )

        peers = [p for p in self.peers(str(node.specs["gpu_model"])) if p.id != node.id]
        prices = trim_outliers(sorted(p.per_gpu for p in peers if not p.auto_match))
        busy = sum(1 for p in peers if p.gpus_in_use >= p.gpus)
        gpus = sum(p.gpus for p in peers)
        in_use = sum(p.gpus_in_use for p in peers)
        fraction, multiplier = demand_multiplier(len(peers), busy, gpus=gpus, gpus_in_use=in_use)
        demand = Demand(len(peers), busy, fraction, multiplier, gpus, in_use)
        count = Decimal(gpu_count)
        if prices:
            market = MarketStats(
                len(prices),
                quantize(percentile(prices, Decimal("0.25")) * count),
                quantize(percentile(prices, Decimal("0.5")) * count),
                quantize(percentile(prices, Decimal("0.75")) * count),
            )
        else:
            market = MarketStats(0, None, None, None)

        if len(prices) >= MIN_SAMPLES:
            base = percentile(prices, Decimal("0.5")) * count
            return Suggestion(self._floored(base * multiplier), "market", market, demand, None)
        baseline = gpu_baseline(
            str(node.specs["gpu_model"]), Decimal(str(node.specs.get("gpu_vram_gb") or 0))
        )
        return Suggestion(
            self._floored(baseline.per_unit * count * multiplier),
            "baseline",
            market,
            demand,
            baseline,
        )

    def _floored(self, value: Decimal) -> Decimal:
        return max(quantize(value), self.floor)


def suggest_for_node(session: Session, *, node: HostNode) -> Suggestion:
    return SmartPricingService(session).suggest(node)


def reprice_nodes(session: Session, *, node_ids: Sequence[uuid.UUID]) -> list[PriceChange]:
    """Move each auto-matching node among `node_ids` to its suggested rate, never below its
    min_hourly_rate; record each change. Rentals keep the cost_per_hour locked at their start.

    Rows another transaction holds (a host editing the node) are skipped until the next run.
    """
    nodes = (
        session.execute(
            select(HostNode)
            .where(HostNode.id.in_(list(node_ids)), HostNode.auto_match_market)
            .order_by(HostNode.id)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    pricing = SmartPricingService(session)
    changes: list[PriceChange] = []
    for node in nodes:
        suggestion = pricing.suggest(node)
        new_rate, reason = suggestion.suggested_hourly_rate, "auto_match"
        floor_raw = node.pricing.get("min_hourly_rate")
        if floor_raw is not None and new_rate < Decimal(floor_raw):
            new_rate, reason = quantize(Decimal(floor_raw)), "floor"
        old_rate = quantize(Decimal(node.pricing["hourly_rate"]))
        if new_rate == old_rate:
            continue
        node.pricing = {**node.pricing, "hourly_rate": to_wire(new_rate)}
        change = PriceChange(
            node_id=node.id,
            old_rate=old_rate,
            new_rate=new_rate,
            basis=suggestion.basis,
            reason=reason,
            suggested_rate=suggestion.suggested_hourly_rate,
            sample_size=suggestion.market.sample_size,
        )
        session.add(change)
        node_changed(session, node.id)
        changes.append(change)
    session.flush()
    return changes


def auto_match_node_ids(session: Session) -> list[uuid.UUID]:
    return list(
        session.execute(
            select(HostNode.id).where(HostNode.auto_match_market).order_by(HostNode.id)
        ).scalars()
    )
