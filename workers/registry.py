"""The domain actor modules, and the periodic jobs they declare (PERIODIC_JOBS)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

# Each module may define PERIODIC_JOBS: a list of (actor, seconds_from_settings) pairs.
ACTOR_MODULES = [
    "workers.system",
    "workers.fleet",
    "workers.rentals",
    "workers.billing",
    "workers.pricing",
]


def load_actor_modules() -> list[ModuleType]:
    modules = []
    for name in ACTOR_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def periodic_jobs() -> list[tuple[Any, Callable[[Any], int]]]:
    jobs: list[tuple[Any, Callable[[Any], int]]] = []
    for module in load_actor_modules():
        jobs.extend(getattr(module, "PERIODIC_JOBS", []))
    return jobs
