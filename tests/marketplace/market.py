"""A seeded market: nodes inserted directly with their status set through the fleet's state machine."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from app.db import session_scope
from app.enums import NodeStatus
from app.fleet.models import HostNode
from app.fleet.state import transition_node

CITIES: dict[str, tuple[str, float, float]] = {
    "Austin": ("US", 30.2672, -97.7431),
    "New York": ("US", 40.7128, -74.0060),
    "Toronto": ("CA", 43.6532, -79.3832),
    "Berlin": ("DE", 52.5200, 13.4050),
    "Paris": ("FR", 48.8566, 2.3522),
    "Amsterdam": ("NL", 52.3676, 4.9041),
    "Seattle": ("US", 47.6062, -122.3321),
}


def add_node(
    owner_id: uuid.UUID,
    *,
    gpu_model: str = "RTX 4090",
    gpu_count: int = 1,
    vram: float = 24,
    tflops: float = 82.6,
    cpu: int = 16,
    ram: float = 64,
    disk: float = 1000,
    rate: str = "1.0000",
    city: str = "Austin",
    coordinates: bool = True,
    status: NodeStatus = NodeStatus.ONLINE,
    verified: bool = False,
    draining: bool = False,
    auto: bool = False,
    min_rate: str | None = None,
    name: str | None = None,
    gpus_in_use: int | None = None,
) -> uuid.UUID:
    """Insert a node (committed) and bring it to `status`; returns its id. A busy node has all
    of its GPUs in use unless `gpus_in_use` says otherwise."""
    country, lat, lng = CITIES[city]
    location: dict[str, Any] = {"country": country, "city": city}
    if coordinates:
        location.update(lat=lat, lng=lng)
    pricing: dict[str, Any] = {"hourly_rate": str(Decimal(rate)), "auto_match_market": auto}
    if min_rate is not None:
        pricing["min_hourly_rate"] = min_rate
    with session_scope() as session:
        node = HostNode(
            owner_id=owner_id,
            name=name or f"{gpu_count}x {gpu_model}",
            specs={
                "gpu_model": gpu_model,
                "gpu_count": gpu_count,
                "gpu_vram_gb": vram,
                "tflops": tflops,
                "cpu_cores": cpu,
                "ram_gb": ram,
                "disk_gb": disk,
            },
            pricing=pricing,
            location=location,
            status=NodeStatus.OFFLINE,
            verified=verified,
            draining=draining,
            maintenance=status == NodeStatus.MAINTENANCE,
            gpus_in_use=(
                gpus_in_use
                if gpus_in_use is not None
                else max(gpu_count, 1)
                if status == NodeStatus.BUSY
                else 0
            ),
        )
        session.add(node)
        session.flush()
        if status != NodeStatus.OFFLINE:
            transition_node(session, node, status, reason="test")
        return node.id


def set_status(node_id: uuid.UUID, status: NodeStatus) -> None:
    with session_scope() as session:
        node = session.get(HostNode, node_id, with_for_update=True)
        assert node is not None
        transition_node(session, node, status, reason="test")


# The seeded market of the search tests: name -> add_node keywords.
MARKET: dict[str, dict[str, Any]] = {
    "austin-4090": dict(
        gpu_model="RTX 4090",
        gpu_count=1,
        vram=24,
        tflops=82.6,
        cpu=16,
        ram=64,
        disk=1000,
        rate="0.4000",
        city="Austin",
        verified=True,
    ),
    "nyc-2x4090": dict(
        gpu_model="RTX 4090",
        gpu_count=2,
        vram=24,
        tflops=165.2,
        cpu=32,
        ram=128,
        disk=2000,
        rate="0.8500",
        city="New York",
    ),
    "toronto-3090": dict(
        gpu_model="RTX 3090",
        gpu_count=1,
        vram=24,
        tflops=35.6,
        cpu=8,
        ram=32,
        disk=500,
        rate="0.2200",
        city="Toronto",
        verified=True,
    ),
    "berlin-4xa100": dict(
        gpu_model="A100 80GB",
        gpu_count=4,
        vram=80,
        tflops=1248,
        cpu=64,
        ram=512,
        disk=4000,
        rate="5.2000",
        city="Berlin",
        verified=True,
    ),
    "paris-8xh100": dict(
        gpu_model="H100 80GB HBM3",
        gpu_count=8,
        vram=80,
        tflops=7916,
        cpu=128,
        ram=1024,
        disk=8000,
        rate="19.0000",
        city="Paris",
    ),
    "seattle-4080": dict(
        gpu_model="NVIDIA GeForce RTX 4080",
        gpu_count=1,
        vram=16,
        tflops=48.7,
        cpu=12,
        ram=32,
        disk=1000,
        rate="0.3000",
        city="Seattle",
        coordinates=False,
    ),
    "amsterdam-cpu": dict(
        gpu_model="none",
        gpu_count=0,
        vram=0,
        tflops=1.5,
        cpu=64,
        ram=256,
        disk=2000,
        rate="0.9000",
        city="Amsterdam",
    ),
    # Not offered: busy, offline, draining, in maintenance (all would be the cheapest).
    "busy-4090": dict(rate="0.1000", status=NodeStatus.BUSY),
    "offline-4090": dict(rate="0.1000", status=NodeStatus.OFFLINE),
    "draining-4090": dict(rate="0.1000", draining=True),
    "maintenance-4090": dict(rate="0.1000", status=NodeStatus.MAINTENANCE),
}
OFFERED = [
    "austin-4090",
    "nyc-2x4090",
    "toronto-3090",
    "berlin-4xa100",
    "paris-8xh100",
    "seattle-4080",
    "amsterdam-cpu",
]


def seed_market(owner_id: uuid.UUID) -> dict[str, uuid.UUID]:
    return {name: add_node(owner_id, name=name, **spec) for name, spec in MARKET.items()}
