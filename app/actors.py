"""Every domain's actors, imported in one place (as app/models.py does for the tables).

Importing this module declares every actor on the broker and registers every periodic job;
the worker processes (workers/), the scheduler and the app factory import it.
"""

from app.billing import actors as billing
from app.fleet import actors as fleet
from app.ops import actors as ops
from app.pricing import actors as pricing
from app.queue.periodic import PeriodicJob, registered
from app.rentals import actors as rentals
from app.webhooks import actors as webhooks

DOMAINS = (ops, fleet, rentals, billing, pricing, webhooks)


def periodic_jobs() -> list[PeriodicJob]:
    """Every domain's periodic jobs, as the scheduler sends them."""
    return registered()


__all__ = ["DOMAINS", "PeriodicJob", "periodic_jobs"]
