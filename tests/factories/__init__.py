"""Payload factories per domain."""

from __future__ import annotations

import copy
from typing import Any

_NODE: dict[str, Any] = {
    "name": "rig-1",
    "specs": {
        "gpu_model": "RTX 4090",
        "gpu_count": 2,
        "gpu_vram_gb": 24,
        "tflops": 82.6,
        "cpu_cores": 16,
        "ram_gb": 64,
        "disk_gb": 1000,
        "cuda_version": "12.4",
    },
    "pricing": {"hourly_rate": "1.2000", "auto_match_market": False},
    "location": {"country": "US", "city": "Austin", "lat": 30.2672, "lng": -97.7431},
}


def node_payload(**overrides: Any) -> dict[str, Any]:
    """A valid POST /nodes body; keyword groups (specs=, pricing=, location=) are merged."""
    body = copy.deepcopy(_NODE)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    return body
