"""How much of a node its live rentals hold.

A GPU node is shared by the GPU: each rental holds some of its GPUs, and the node is full (status
`busy`) when none is free. A CPU-only node is rented whole: its one rental counts as 1.
`HostNode.gpus_in_use` is the count, changed only with the rentals it counts
(app/rentals/gpus.py).
"""

from __future__ import annotations

from app.fleet.models import HostNode


def gpu_total(node: HostNode) -> int:
    """The node's GPUs, as its host declared them (0 for a CPU-only node)."""
    return int((node.specs or {}).get("gpu_count") or 0)


def capacity(node: HostNode) -> int:
    """What `gpus_in_use` reaches when the node is full: its GPUs, or 1 for a CPU-only node."""
    return max(gpu_total(node), 1)


def units(gpu_count: int) -> int:
    """What a rental of `gpu_count` GPUs adds to `gpus_in_use` (a CPU-only rental: 1)."""
    return max(int(gpu_count), 1)


def gpu_free(node: HostNode) -> int:
    """GPUs no live rental holds (0 on a CPU-only node)."""
    return max(gpu_total(node) - int(node.gpus_in_use or 0), 0)


def is_full(node: HostNode) -> bool:
    return int(node.gpus_in_use or 0) >= capacity(node)


def in_use(node: HostNode) -> bool:
    return int(node.gpus_in_use or 0) > 0
