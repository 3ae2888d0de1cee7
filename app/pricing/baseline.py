"""Reference prices used when the market has too few comparable nodes.

Indicative per-GPU hourly prices (USD) for common GPU models, and per-core / per-GB prices for
CPU-only nodes. Sources, date and method: docs/pricing-baseline.md. These are levels, not quotes:
the market suggestion replaces them as soon as enough comparable nodes are listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

BASELINE_DATE = "2026-11-27"

# Ordered: the first pattern that matches the normalized model name wins, so specific variants
# (A100 80GB, H100 PCIe, 4090 vs 4090 D ...) come before their family.
_GPU_TABLE: list[tuple[str, str, str]] = [
    # data-centre
    (r"\bb200\b", "B200", "5.00"),
    (r"\bgh200\b", "GH200", "2.50"),
    (r"\bh200\b", "H200", "3.20"),
    (r"\bh100\b.*\bpcie\b", "H100 PCIe", "2.00"),
    (r"\bh100\b", "H100 SXM", "2.30"),
    (r"\ba100\b.*\b80( ?gb?)?\b", "A100 80GB", "1.30"),
    (r"\ba100\b", "A100 40GB", "0.90"),
    (r"\bmi300x\b", "MI300X", "2.20"),
    (r"\bl40s\b", "L40S", "0.80"),
    (r"\bl40\b", "L40", "0.70"),
    (r"\bl4\b", "L4", "0.40"),
    (r"\ba40\b", "A40", "0.40"),
    (r"\ba10g?\b", "A10", "0.35"),
    (r"\bv100\b", "V100", "0.25"),
    (r"\bt4\b", "T4", "0.15"),
    (r"\bp100\b", "P100", "0.12"),
    # workstation
    (r"\b6000 ada\b", "RTX 6000 Ada", "0.75"),
    (r"\b5000 ada\b", "RTX 5000 Ada", "0.55"),
    (r"\b4000 ada\b", "RTX 4000 Ada", "0.25"),
    (r"\ba6000\b", "RTX A6000", "0.45"),
    (r"\ba5000\b", "RTX A5000", "0.25"),
    (r"\ba4000\b", "RTX A4000", "0.17"),
    # consumer
    (r"\b5090\b", "RTX 5090", "0.70"),
    (r"\b5080\b", "RTX 5080", "0.35"),
    (r"\b4090\b", "RTX 4090", "0.40"),
    (r"\b4080\b", "RTX 4080", "0.25"),
    (r"\b4070 ti\b", "RTX 4070 Ti", "0.17"),
    (r"\b4070\b", "RTX 4070", "0.13"),
    (r"\b4060 ti\b", "RTX 4060 Ti", "0.10"),
    (r"\b3090\b", "RTX 3090", "0.22"),
    (r"\b3080 ti\b", "RTX 3080 Ti", "0.17"),
    (r"\b3080\b", "RTX 3080", "0.15"),
    (r"\b3070\b", "RTX 3070", "0.10"),
    (r"\b3060\b", "RTX 3060", "0.08"),
]
GPU_BASELINE: list[tuple[re.Pattern[str], str, Decimal]] = [
    (re.compile(pattern), label, Decimal(price)) for pattern, label, price in _GPU_TABLE
]

# A GPU model not in the table: priced by its memory, with a floor.
UNKNOWN_GPU_PER_GB_VRAM = Decimal("0.015")
UNKNOWN_GPU_MINIMUM = Decimal("0.10")

# CPU-only nodes.
CPU_PER_CORE = Decimal("0.020")
CPU_PER_GB_RAM = Decimal("0.0025")

_DROP = re.compile(r"\b(nvidia|geforce|tesla|amd|instinct|radeon|quadro)\b")


def normalize_model(model: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx 4090'; 'A100-SXM4-80GB' -> 'a100 sxm4 80gb'."""
    lowered = re.sub(r"[^a-z0-9]+", " ", model.lower())
    return " ".join(_DROP.sub(" ", lowered).split())


@dataclass(frozen=True)
class BaselinePrice:
    per_unit: Decimal  # per GPU for GPU nodes; the whole node for CPU-only nodes
    reference: str  # the table row used ("RTX 4090", "unknown GPU by VRAM", "CPU")


def gpu_baseline(model: str, vram_gb: Decimal) -> BaselinePrice:
    """Reference price of one GPU of `model` per hour."""
    name = normalize_model(model)
    for pattern, label, price in GPU_BASELINE:
        if pattern.search(name):
            return BaselinePrice(price, label)
    by_memory = max(UNKNOWN_GPU_MINIMUM, UNKNOWN_GPU_PER_GB_VRAM * Decimal(vram_gb))
    return BaselinePrice(by_memory, "unknown GPU, by VRAM")


def cpu_baseline(cpu_cores: int, ram_gb: Decimal) -> BaselinePrice:
    """Reference price of a CPU-only node per hour."""
    return BaselinePrice(CPU_PER_CORE * cpu_cores + CPU_PER_GB_RAM * Decimal(ram_gb), "CPU")
