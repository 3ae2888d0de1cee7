"""What the queue dashboard shows, and the operator's actions on dead letters."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.db import utcnow
from app.errors import NotFound
from app.ops import vitals
from app.ops.models import OpsAuditEvent
from app.ops.queues import QueueInspector, platform_queues
from app.webhooks import delivery as webhook_delivery

log = logging.getLogger("app.ops")

DEAD_LETTER_LIMIT = 100


def snapshot(session: Session, client: redis.Redis, settings: Any) -> dict[str, Any]:
    """Everything /ops/queues shows; a part that cannot be read is None and named in `errors`."""
    now = time.time()
    inspector = QueueInspector(client, known_queues=platform_queues())
    errors: list[str] = []

    def part(name: str, read: Any) -> Any:
        try:
            return read()
        except Exception:
            log.warning("ops snapshot part failed", extra={"part": name}, exc_info=True)
            errors.append(name)
            session.rollback()
            return None

    names = part("queues", inspector.queue_names) or []
    queues = part("queues", lambda: [asdict(s) for s in inspector.stats(names)])
    workers = part("workers", lambda: [_worker(w, now) for w in inspector.workers(names)])
    dead = part(
        "dead_letters",
        lambda: [
            _letter(d, now) for d in inspector.all_dead_letters(names, limit=DEAD_LETTER_LIMIT)
        ],
    )
    agents = part(
        "agents",
        lambda: vitals.agent_vitals(client, timeout_s=settings.heartbeat_timeout_seconds, now=now),
    )
    nodes = part("nodes", lambda: vitals.nodes_by_status(session))
    gpus = part("gpus", lambda: vitals.gpus_in_use(session))
    jobs = part("jobs", lambda: vitals.periodic_jobs(client, settings, now=now))
    audit = part("audit", lambda: recent_audit(session))
    webhooks = part("webhooks", lambda: webhook_delivery.ops_summary(session, now=utcnow()))
    totals = None
    if queues is not None:
        totals = {k: sum(q[k] for q in queues) for k in ("ready", "delayed", "in_flight", "dead")}
    return {
        "generated_at": utcnow().isoformat().replace("+00:00", "Z"),
        "now": now,
        "queues": queues,
        "totals": totals,
        "workers": [w for w in workers if w["role"] == "worker"] if workers is not None else None,
        "producers": sum(1 for w in workers if w["role"] == "producer" and w["alive"])
        if workers is not None
        else None,
        "dead_letters": dead,
        "vitals": {
            "agents_connected": agents.connected if agents else None,
            "oldest_unacked_command_age_s": _round(agents.oldest_command_age_s) if agents else None,
            "oldest_unacked_command_node": agents.oldest_command_node if agents else None,
            "nodes": nodes,
            "gpus": gpus,
            "billing_tick_age_s": vitals.last_run_age(jobs, "billing")
            if jobs is not None
            else None,
            "pricing_run_age_s": vitals.last_run_age(jobs, "pricing") if jobs is not None else None,
            "jobs": jobs,
        },
        "audit": audit,
        "webhooks": webhooks,
        "errors": sorted(set(errors)),
    }


def recent_audit(session: Session, limit: int = 10) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(OpsAuditEvent).order_by(OpsAuditEvent.created_at.desc()).limit(limit)
    )
    return [
        {
            "at": row.created_at.isoformat().replace("+00:00", "Z"),
            "admin": row.admin_clerk_id,
            "action": row.action,
            "queue": row.queue,
            "message_id": row.message_id,
            "actor": row.actor,
            "count": row.count,
        }
        for row in rows
    ]


def act_on_dead_letters(
    session: Session,
    inspector: QueueInspector,
    *,
    admin: User,
    action: str,
    queue: str,
    message_id: str | None = None,
) -> int:
    """Requeue or discard one dead letter (`message_id`) or all of a queue's; returns how many.

    The Redis change happens first (it cannot join the SQL transaction); the audit row is added
    to `session` and the JSON log line is written either way, so the action is never unrecorded.
    """
    if action not in ("requeue", "discard"):
        raise ValueError(action)
    actor: str | None = None
    detail: dict[str, Any] = {}
    if message_id is not None:
        letter = inspector.dead_letter(queue, message_id)
        if letter is None:
            raise NotFound("That dead letter is gone (already requeued, discarded or expired).")
        actor = letter.actor
        detail = {
            "message_id": letter.message_id,
            "args": _clip(letter.args),
            "error": letter.error,
            "correlation_id": letter.correlation_id,
        }
        done = (
            inspector.requeue(queue, message_id)
            if action == "requeue"
            else inspector.discard(queue, message_id)
        )
        if not done:
            raise NotFound("That dead letter is gone (already requeued, discarded or expired).")
        count, audit_action = 1, action
    else:
        count = (
            inspector.requeue_all(queue) if action == "requeue" else inspector.discard_all(queue)
        )
        audit_action = f"{action}_all"
    session.add(
        OpsAuditEvent(
            admin_id=admin.id,
            admin_clerk_id=admin.clerk_id,
            action=audit_action,
            queue=queue,
            message_id=message_id,
            actor=actor,
            count=count,
            detail=detail,
        )
    )
    log.info(
        "dead letters " + ("requeued" if action == "requeue" else "discarded"),
        extra={
            "ops_action": audit_action,
            "queue": queue,
            "redis_message_id": message_id,
            "actor": actor,
            "count": count,
            "admin_id": str(admin.id),
            "admin_clerk_id": admin.clerk_id,
        },
    )
    return count


def _worker(worker: Any, now: float) -> dict[str, Any]:
    data = asdict(worker)
    data["last_heartbeat_age_s"] = _round(now - worker.last_heartbeat)
    return data


def _letter(letter: Any, now: float) -> dict[str, Any]:
    data = letter.to_dict()
    data["age_s"] = _round(now - letter.failed_at)
    data["args_text"] = _clip(letter.args)
    data["kwargs_text"] = _clip(letter.kwargs) if letter.kwargs else ""
    return data


def _clip(value: Any, limit: int = 500) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None
