"""Real actors used only by the ops tests; worker processes load them with
`dramatiq workers tests.ops.failing_actors`."""

from __future__ import annotations

import dramatiq

import workers  # noqa: F401  (the broker and the platform's actors come first)
from app.redis_client import get_redis

OPS_QUEUE = "ops_test"
IDLE_QUEUE = "ops_idle"  # no test starts a worker that consumes it while it counts


@dramatiq.actor(queue_name=OPS_QUEUE, max_retries=0)
def fail_until_fixed(token: str) -> None:
    """Fail (straight to the dead letters: no retries) until the test marks `token` fixed."""
    client = get_redis()
    if not client.exists(f"dc:test:fixed:{token}"):
        raise RuntimeError(f"boom {token}")
    client.set(f"dc:test:done:{token}", "1", ex=300)


@dramatiq.actor(queue_name=OPS_QUEUE, max_retries=0, time_limit=20_000)
def hold(token: str) -> None:
    """Stay busy until the test releases `token` (or 8 s pass)."""
    get_redis().blpop([f"dc:test:release:{token}"], timeout=8)


@dramatiq.actor(queue_name=IDLE_QUEUE, max_retries=0)
def idle(number: int) -> None:
    """Do nothing; only ever counted while waiting in its queue."""
