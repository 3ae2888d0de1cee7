"""The rental lifecycle the workers run: provision, agent events, stop, timeouts.

Functions never commit; the actors in app/rentals/actors.py own the units of work. Each step
takes the rental under its row lock, checks its state and makes the transition; commands to the
node's agent are queued to go out once the transaction commits
(:func:`app.fleet.commands.send_after_commit`), so nothing is sent about rows that were rolled
back. Every step may run twice for the same message: a repeat finds the state already changed
and does nothing more than queue again a command the agent treats as done.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.ssh_keys import account_ssh_keys
from app.billing import service as billing
from app.config import Settings
from app.db import utcnow
from app.enums import NodeStatus
from app.fleet import commands
from app.fleet.capacity import is_full
from app.fleet.events import node_changed
from app.fleet.liveness import clear_reconcile
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.proxy.service import (
    PortPoolExhausted,
    allocate_ports,
    live_ports,
    quarantine_ports,
    release_expired_quarantine,
    release_ports,
    release_quarantine,
)
from app.rentals import gpus, launch
from app.rentals.availability import NOT_STARTED, Unavailable, why_unavailable
from app.rentals.models import Rental
from app.rentals.service import rental_event
from app.rentals.start_command import start_deadline, start_instance_data
from app.rentals.state import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILURE_CODES,
    LIVE,
    PENDING,
    transition_rental,
)
from app.webhooks.models import EventType

log = logging.getLogger(__name__)
NODE_OFFLINE = "node offline"


def _lock_rental(session: Session, rental_id: uuid.UUID | str) -> Rental | None:
    try:
        key = uuid.UUID(str(rental_id))
    except ValueError:
        log.warning("rental id is not a UUID", extra={"rental_id": str(rental_id)[:64]})
        return None
    return session.execute(
        select(Rental).where(Rental.id == key).with_for_update()
    ).scalar_one_or_none()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _lock_node(session: Session, node_id: uuid.UUID) -> HostNode:
    return session.execute(
        select(HostNode).where(HostNode.id == node_id).with_for_update()
    ).scalar_one()


def _free_node(session: Session, node: HostNode, rental: Rental) -> None:
    """The rental no longer holds its GPUs (released with its end): a busy node with a GPU free
    again goes back to online; offline stays offline."""
    if node.status == NodeStatus.BUSY and not is_full(node):
        transition_node(session, node, NodeStatus.ONLINE, reason=f"rental {rental.id} ended")


def _send_stop(session: Session, rental: Rental) -> None:
    """Tell the agent to stop the rental's container, once this transaction commits."""
    commands.send_after_commit(
        session,
        rental.node_id,
        "stop_instance",
        {"rental_id": str(rental.id), "container_id": rental.container_id},
    )


def _stop_unaccounted(
    session: Session, node_id: uuid.UUID | str, rental_id: str, container: str
) -> None:
    """Stop a container the platform does not account for (the agent says it runs it)."""
    commands.send_after_commit(
        session,
        node_id,
        "stop_instance",
        {"rental_id": rental_id, "container_id": container[:128]},
        disposable=True,
    )


def _cancel(
    session: Session, rental: Rental, node: HostNode, reason: str, code: str | None = None
) -> None:
    transition_rental(session, rental, CANCELLED, reason=reason, failure_code=code)
    release_ports(session, rental_id=rental.id)
    _free_node(session, node, rental)
    rental_event(session, rental, EventType.RENTAL_FAILED)


def _complete(
    session: Session,
    rental: Rental,
    node: HostNode,
    *,
    reason: str | None,
    at: datetime | None = None,
    bill_until: datetime | None = None,
    quarantine_until: datetime | None = None,
) -> None:
    """End an active rental. With `quarantine_until` its container may still run (the agent did
    not confirm): the ports stay out of the pool and the node is flagged until it reconciles."""
    end = at or utcnow()
    transition_rental(session, rental, COMPLETED, reason=reason, at=end)
    billing.settle_rental(session, rental, bill_until or end)
    if quarantine_until is None:
        release_ports(session, rental_id=rental.id)
    else:
        quarantine_ports(session, rental_id=rental.id, until=quarantine_until)
        node.needs_reconcile = True
        node_changed(session, node.id)
    _free_node(session, node, rental)
    rental_event(session, rental, EventType.RENTAL_COMPLETED)


def provision(session: Session, *, rental_id: str, settings: Settings) -> float | None:
    """Assign the rental's GPUs, allocate the public ports and queue start_instance.

    Returns the seconds left until the start timeout when start_instance was queued (the
    caller schedules the check), None when there is nothing to start. Safe to run again for the
    same rental: the GPUs and the ports already assigned are kept, and the start
    command is sent again (the agent ignores a repeat).
    """
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != PENDING:
        return None
    node = _lock_node(session, rental.node_id)
    if rental.stop_requested_at is not None:
        _cancel(session, rental, node, rental.stop_reason or "stopped before it started")
        return None
    if node.status != NodeStatus.BUSY:
        problem = why_unavailable(node)
        if problem is not None:
            code = "node_offline" if problem == Unavailable.OFFLINE else "insufficient_resources"
            _cancel(session, rental, node, NOT_STARTED[problem], code)
            return None
    try:
        assigned = gpus.assign(session, rental, node)
    except gpus.NoFreeGpu as exc:
        _cancel(session, rental, node, str(exc), "insufficient_resources")
        return None
    if node.status != NodeStatus.BUSY and is_full(node):
        transition_node(session, node, NodeStatus.BUSY, reason=f"rental {rental.id}")
    keys = launch.dedupe_keys(rental.ssh_keys or [], account_ssh_keys(session, rental.renter_id))
    if len(keys) > launch.MAX_SSH_KEYS:
        _cancel(
            session,
            rental,
            node,
            f"more than {launch.MAX_SSH_KEYS} SSH keys with the account's keys",
            "invalid_request",
        )
        return None
    registry_auth = None
    if rental.registry_auth_sealed is not None:
        registry_auth = launch.unseal(rental.registry_auth_sealed, settings)
        if registry_auth is None:
            _cancel(
                session,
                rental,
                node,
                "the registry credentials could not be opened (REGISTRY_AUTH_KEY changed)",
                "registry_auth_failed",
            )
            return None
    try:
        mapping = allocate_ports(session, rental=rental, port_range=settings.proxy_port_range)
    except PortPoolExhausted:
        _cancel(
            session,
            rental,
            node,
            "no free public port; try again later",
            "insufficient_resources",
        )
        return None
    data = start_instance_data(
        session,
        rental=rental,
        node=node,
        mapping=mapping,
        settings=settings,
        ssh_keys=keys,
        registry_auth=registry_auth,
        assigned=[(gpu.gpu_index, gpu.gpu_uuid) for gpu in assigned],
    )
    # Past the start timeout the rental is cancelled: a start that reaches the agent later (after
    # an outage) must not run. The pump drops it, and the agent refuses it.
    deadline = start_deadline(rental, settings)
    commands.send_after_commit(
        session, node.id, "start_instance", data, expires_at=deadline.timestamp()
    )
    return max(0.0, (deadline - utcnow()).total_seconds())


def connection_info(mapping: dict[int, int], host: str) -> dict[str, Any]:
    info: dict[str, Any] = {"host": host, "ports": {str(c): p for c, p in sorted(mapping.items())}}
    if 22 in mapping:
        info["ssh"] = f"ssh -p {mapping[22]} root@{host}"
    return info


def started(
    session: Session, *, node_id: str, rental_id: str, container_id: str, settings: Settings
) -> None:
    """instance_started: the rental is active from now, reachable on its public ports."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id):
        log.warning(
            "instance_started for an unknown rental",
            extra={"rental_id": rental_id, "node_id": node_id},
        )
        # Whatever it runs, it is not a rental of this node: stop it there.
        if _is_uuid(rental_id):
            _stop_unaccounted(session, node_id, rental_id, container_id)
        return
    if rental.status == PENDING:
        rental.container_id = container_id[:128]
        rental.connection_info = connection_info(
            live_ports(session, rental_id=rental.id), settings.public_proxy_host
        )
        transition_rental(session, rental, ACTIVE)
        rental_event(session, rental, EventType.RENTAL_ACTIVE)
        if rental.stop_requested_at is not None:  # a stop raced the start: carry it out now
            _send_stop(session, rental)
        return
    if rental.status in (CANCELLED, COMPLETED) and rental.container_id in (None, container_id):
        # Started after we gave up on it (timeout or stop): the container must not run.
        rental.container_id = rental.container_id or container_id[:128]
        _send_stop(session, rental)
        return
    if rental.container_id != container_id:
        # A second container for the rental, or one for a rental that already ended with
        # another container: the platform accounts for neither, so it must not run.
        log.warning(
            "instance_started for a container the platform does not account for",
            extra={"rental_id": rental_id, "node_id": node_id},
        )
        _stop_unaccounted(session, node_id, str(rental.id), container_id)


def failed(
    session: Session,
    *,
    node_id: str,
    rental_id: str,
    reason: str,
    failure_code: str | None = None,
) -> None:
    """instance_failed: a rental that never ran is cancelled with the agent's reason and code."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id) or rental.status != PENDING:
        return
    node = _lock_node(session, rental.node_id)
    code = failure_code if failure_code in FAILURE_CODES else "engine_unavailable"
    _cancel(session, rental, node, f"the instance failed to start: {reason}", code)


def progressed(
    session: Session, *, node_id: str, rental_id: str, phase: str, progress: float | None
) -> None:
    """instance_progress: a pending rental is pulling or starting; the start timeout restarts."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id) or rental.status != PENDING:
        return
    rental.phase = phase
    if phase == "pulling" and progress is not None:
        # Never backwards, whatever order the events arrive in.
        rental.progress = max(progress, rental.progress or 0.0)
    elif phase != "pulling":
        rental.progress = None
    rental.last_progress_at = utcnow()


def stopped(
    session: Session,
    *,
    node_id: str,
    rental_id: str,
    container_id: str | None,
    exit_code: int | None,
) -> None:
    """instance_stopped: the container is gone, asked to or by itself."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id):
        return
    if rental.status not in LIVE:
        if not container_id or rental.container_id in (None, container_id):
            _container_gone(session, rental)
        return
    if container_id and rental.container_id and container_id != rental.container_id:
        log.warning(
            "instance_stopped for another container of the rental", extra={"rental_id": rental_id}
        )
        return
    node = _lock_node(session, rental.node_id)
    rental.exit_code = exit_code
    if rental.status == PENDING:
        _cancel(session, rental, node, rental.stop_reason or _exit_text(exit_code, before=True))
    elif rental.stop_requested_at is not None:
        _complete(session, rental, node, reason=rental.stop_reason)
    else:
        _complete(session, rental, node, reason=_exit_text(exit_code, before=False))


def _container_gone(session: Session, rental: Rental) -> None:
    """An ended rental's container is confirmed gone: its quarantined ports go back."""
    if release_quarantine(session, rental_ids=[rental.id]):
        clear_reconcile(session, _lock_node(session, rental.node_id))


def _exit_text(exit_code: int | None, *, before: bool) -> str:
    when = "before it was reported running" if before else "by itself"
    code = f" with code {exit_code}" if exit_code is not None else ""
    return f"the container exited {when}{code}"


def stop(
    session: Session, *, rental_id: str, reason: str | None, settings: Settings
) -> float | None:
    """Stop a rental: a pending one is cancelled now; an active one is told to stop.

    Returns the seconds until the stop is due to be confirmed (the caller schedules
    :func:`check_stop`), None when nothing waits for the agent.
    """
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status not in LIVE:
        return None
    if rental.stop_requested_at is None:
        rental.stop_requested_at = utcnow()
        rental_event(session, rental, EventType.RENTAL_STOP_REQUESTED)
    if reason and not rental.stop_reason:
        rental.stop_reason = reason[:2000]
    if rental.status == PENDING:
        node = _lock_node(session, rental.node_id)
        _cancel(session, rental, node, rental.stop_reason or "stopped before it started")
    # A pending rental's container may be starting already: tell the agent either way.
    _send_stop(session, rental)
    if rental.status != ACTIVE:
        return None
    waited = (utcnow() - rental.stop_requested_at).total_seconds()
    return max(0.0, settings.rental_stop_timeout_seconds - waited)


def check_stop(session: Session, *, rental_id: str, settings: Settings) -> float | None:
    """A stop the agent has not confirmed: after RENTAL_STOP_TIMEOUT_SECONDS send it again;
    after twice that, end the rental `completed` anyway, keep its ports quarantined and flag the
    node, whose agent is asked to reconnect and report its containers.

    Billing ends when the stop was asked for. Returns the seconds until the next check, or None.
    """
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != ACTIVE or rental.stop_requested_at is None:
        return None
    timeout = settings.rental_stop_timeout_seconds
    waited = (utcnow() - rental.stop_requested_at).total_seconds()
    if waited < timeout:
        return timeout - waited
    if waited < 2 * timeout:
        _send_stop(session, rental)  # replaces the queued one (app/fleet/commands.py)
        log.warning("stop not confirmed; sent again", extra={"rental_id": rental_id})
        return 2 * timeout - waited
    node = _lock_node(session, rental.node_id)
    now = utcnow()
    _complete(
        session,
        rental,
        node,
        reason=f"the node did not confirm the stop within {2 * timeout} s",
        at=now,
        bill_until=max(rental.start_time or rental.stop_requested_at, rental.stop_requested_at),
        quarantine_until=now + timedelta(seconds=settings.port_quarantine_seconds),
    )
    _send_stop(session, rental)  # stays queued until the agent takes it
    commands.reconnect_after_commit(session, node.id)
    log.warning("stop never confirmed; rental ended", extra={"rental_id": rental_id})
    return None


def overdue_stops(session: Session, *, settings: Settings) -> list[str]:
    """Active rentals whose stop is not confirmed after RENTAL_STOP_TIMEOUT_SECONDS."""
    cutoff = utcnow() - timedelta(seconds=settings.rental_stop_timeout_seconds)
    return [
        str(i)
        for i in session.execute(
            select(Rental.id).where(
                Rental.status == ACTIVE,
                Rental.stop_requested_at.is_not(None),
                Rental.stop_requested_at <= cutoff,
            )
        ).scalars()
    ]


def check_start(session: Session, *, rental_id: str, settings: Settings) -> float | None:
    """Cancel a rental still pending after RENTAL_START_TIMEOUT_SECONDS.

    Returns the seconds left when it is not due yet (the caller checks again then), else None.
    """
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != PENDING:
        return None
    timeout = settings.rental_start_timeout_seconds
    remaining = (start_deadline(rental, settings) - utcnow()).total_seconds()
    if remaining > 0:
        return remaining
    node = _lock_node(session, rental.node_id)
    if node.status == NodeStatus.OFFLINE:
        _cancel(session, rental, node, NOT_STARTED[Unavailable.OFFLINE], "node_offline")
    elif rental.last_progress_at is not None:
        _cancel(
            session,
            rental,
            node,
            f"the start made no progress for {timeout} s (last phase: {rental.phase})",
            "start_timeout",
        )
    else:
        _cancel(
            session,
            rental,
            node,
            f"the node did not start the instance within {timeout} s",
            "start_timeout",
        )
    _send_stop(session, rental)
    return None


def overdue_pending_rentals(session: Session, *, settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=settings.rental_start_timeout_seconds)
    since = func.greatest(
        Rental.created_at, func.coalesce(Rental.last_progress_at, Rental.created_at)
    )
    return [
        str(i)
        for i in session.execute(
            select(Rental.id).where(Rental.status == PENDING, since <= cutoff)
        ).scalars()
    ]


def rentals_on_offline_nodes(session: Session, *, settings: Settings) -> list[str]:
    """Active rentals whose node has been offline for longer than the grace period."""
    cutoff = utcnow() - timedelta(seconds=settings.rental_offline_grace_seconds)
    since = func.coalesce(HostNode.status_changed_at, HostNode.last_seen_at)
    return [
        str(i)
        for i in session.execute(
            select(Rental.id)
            .join(HostNode, HostNode.id == Rental.node_id)
            .where(Rental.status == ACTIVE, HostNode.status == NodeStatus.OFFLINE, since <= cutoff)
        ).scalars()
    ]


def end_on_offline_node(session: Session, *, rental_id: str, settings: Settings) -> None:
    """End an active rental whose node stayed offline past the grace period.

    Billing stops at the node's last heartbeat; the agent is told to stop the container when it
    comes back (the command waits in the node's stream).
    """
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != ACTIVE:
        return
    node = _lock_node(session, rental.node_id)
    now = utcnow()
    since = node.status_changed_at or node.last_seen_at
    grace = timedelta(seconds=settings.rental_offline_grace_seconds)
    if node.status != NodeStatus.OFFLINE or since is None or now - since < grace:
        return
    last_seen = node.last_seen_at or since
    bill_until = max(rental.start_time or last_seen, min(last_seen, now))
    # The container and its tunnel may still run (frpc has its own connection to frps): the ports
    # stay quarantined until the agent comes back and reconciles, or for the safety period.
    _complete(
        session,
        rental,
        node,
        reason=NODE_OFFLINE,
        at=now,
        bill_until=bill_until,
        quarantine_until=now + timedelta(seconds=settings.port_quarantine_seconds),
    )
    _send_stop(session, rental)


def end_expired_quarantines(session: Session) -> int:
    """Ports quarantined longer than PORT_QUARANTINE_SECONDS go back to the pool."""
    nodes = release_expired_quarantine(session, now=utcnow())
    for node_id in nodes:
        clear_reconcile(session, _lock_node(session, node_id))
    return len(nodes)
