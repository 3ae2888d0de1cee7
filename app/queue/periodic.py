"""The periodic schedule: each domain registers its periodic actors; the scheduler sends them."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import dramatiq

from app.config import Settings

LAST_SENT_KEY = "dc:scheduler:last_sent"  # field: actor name, value: epoch seconds of the send


class PeriodicJob(NamedTuple):
    actor: dramatiq.Actor[[], None]
    every: Callable[[Settings], int]  # seconds between two sends


_registered: dict[str, PeriodicJob] = {}


def register(*jobs: PeriodicJob) -> list[PeriodicJob]:
    """Add jobs to the schedule (a domain's actors module does this when it is imported)."""
    for job in jobs:
        _registered[job.actor.actor_name] = job
    return list(jobs)


def registered() -> list[PeriodicJob]:
    """Every registered job; complete once app/actors.py has been imported."""
    return list(_registered.values())
