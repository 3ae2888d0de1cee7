"""Rentals: creation and views for the API, and the lifecycle steps the workers run.

Functions never commit. Lifecycle steps take the rental under its row lock and return an
:class:`Outcome` naming what the caller must send once its transaction has committed (commands
to the node's agent, delayed checks), so nothing is sent about rows that were rolled back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.models import User
from app.config import Settings
from app.db import utcnow
from app.enums import NodeStatus, RentalStatus
from app.errors import Conflict, NotFound, PaymentRequired
from app.fleet.models import HostNode
from app.fleet.state import transition_node
from app.money import quantize, to_wire
from app.pagination import newest_first_page
from app.proxy.service import (
    PortPoolExhausted,
    allocate_ports,
    live_ports,
    release_ports,
    tunnel_settings,
)
from app.rentals.models import Rental
from app.rentals.state import ACTIVE, CANCELLED, COMPLETED, LIVE, PENDING, transition_rental

log = logging.getLogger(__name__)
LIVE_INDEX = "uq_rentals_one_live_per_node"
NODE_OFFLINE = "node offline"


# ---------------------------------------------------------------------------- API side
def create_rental(
    session: Session,
    *,
    renter: User,
    settings: Settings,
    node_id: uuid.UUID,
    image: str,
    command: list[str] | None,
    env: dict[str, str],
    ports: list[int],
    max_hourly_rate: Decimal | None,
) -> Rental:
    """Write a pending rental at the node's current price; the workers take it from there."""
    node = session.get(HostNode, node_id)
    if node is None:
        raise NotFound("No such node.")
    if node.owner_id == renter.id:
        raise Conflict("You cannot rent your own node.")
    _check_available(session, node)
    price = quantize(Decimal(node.hourly_rate))
    if max_hourly_rate is not None and price > max_hourly_rate:
        raise Conflict(
            f"The node's price is now {to_wire(price)} per hour, above your "
            f"max_hourly_rate of {to_wire(max_hourly_rate)}."
        )
    _check_balance(session, renter=renter, price=price, minutes=settings.min_balance_minutes)

    rental = Rental(
        renter_id=renter.id,
        node_id=node.id,
        status=RentalStatus.PENDING,
        image=image,
        command=command,
        env=dict(env),
        ports=list(ports),
        cost_per_hour=price,
    )
    try:
        with session.begin_nested():
            session.add(rental)
            session.flush()
    except IntegrityError as exc:
        if LIVE_INDEX in str(exc.orig):
            raise Conflict("The node was just rented by someone else.") from None
        raise
    session.refresh(rental)
    return rental


def _check_available(session: Session, node: HostNode) -> None:
    if node.maintenance or node.status == NodeStatus.MAINTENANCE:
        raise Conflict("The node is in maintenance and cannot be rented now.")
    if node.draining:
        raise Conflict("The node is draining and takes no new rentals.")
    if node.status == NodeStatus.BUSY or _has_live_rental(session, node.id):
        raise Conflict("The node is already rented.")
    if node.status != NodeStatus.ONLINE:
        raise Conflict("The node is offline.")


def _has_live_rental(session: Session, node_id: uuid.UUID) -> bool:
    return (
        session.execute(
            select(func.count())
            .select_from(Rental)
            .where(Rental.node_id == node_id, Rental.status.in_(LIVE))
        ).scalar_one()
        > 0
    )


def _check_balance(session: Session, *, renter: User, price: Decimal, minutes: int) -> None:
    """The balance must cover `minutes` of this rental plus every live rental the renter has."""
    running = session.execute(
        select(func.coalesce(func.sum(Rental.cost_per_hour), 0)).where(
            Rental.renter_id == renter.id, Rental.status.in_(LIVE)
        )
    ).scalar_one()
    required = quantize((Decimal(running) + price) * minutes / 60)
    if renter.balance < required:
        raise PaymentRequired(
            f"Your balance of {to_wire(renter.balance)} does not cover {minutes} minutes at "
            f"{to_wire(price)} per hour (needed: {to_wire(required)}, counting your running "
            "rentals). Add credit and try again."
        )


def get_rental(
    session: Session, *, user: User, rental_id: uuid.UUID, admin: bool = False, lock: bool = False
) -> Rental:
    """The rental when `user` rented it (or is an admin); 404 otherwise."""
    query = select(Rental).where(Rental.id == rental_id)
    if not admin:
        query = query.where(Rental.renter_id == user.id)
    if lock:
        query = query.with_for_update()
    rental = session.execute(query).scalar_one_or_none()
    if rental is None:
        raise NotFound("No such rental.")
    return rental


def request_stop(session: Session, *, rental: Rental, reason: str | None = None) -> bool:
    """Record a stop request on a live rental; the stop_rental actor carries it out.

    Returns False when there is nothing (more) to do: the rental has ended already.
    """
    if rental.status not in LIVE:
        return False
    if rental.stop_requested_at is None:
        rental.stop_requested_at = utcnow()
        if reason:
            rental.stop_reason = reason[:2000]
    return True


def _page(
    session: Session, query: Any, *, limit: int, cursor: str | None
) -> tuple[list[Rental], str | None]:
    return newest_first_page(session, query, Rental, limit=limit, cursor=cursor)


def list_rentals(
    session: Session,
    *,
    renter: User,
    limit: int,
    cursor: str | None,
    status: RentalStatus | None = None,
) -> tuple[list[Rental], str | None]:
    query = select(Rental).where(Rental.renter_id == renter.id)
    if status is not None:
        query = query.where(Rental.status == status)
    return _page(session, query, limit=limit, cursor=cursor)


def list_node_rentals(
    session: Session, *, owner: User, node_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Rental], str | None]:
    owns = session.execute(
        select(HostNode.id).where(HostNode.id == node_id, HostNode.owner_id == owner.id)
    ).scalar()
    if owns is None:
        raise NotFound("No such node.")
    return _page(
        session, select(Rental).where(Rental.node_id == node_id), limit=limit, cursor=cursor
    )


def live_rentals_for_node(session: Session, node_id: uuid.UUID | str) -> list[Rental]:
    """The node's pending or active rentals (at most one, by the partial unique index)."""
    return list(
        session.execute(
            select(Rental).where(Rental.node_id == uuid.UUID(str(node_id)), Rental.status.in_(LIVE))
        ).scalars()
    )


def rental_view(
    rental: Rental, *, balance: Decimal | None, now: datetime | None = None
) -> dict[str, Any]:
    """The renter's view: the row plus what it has cost so far and the credit minutes left."""
    now = now or utcnow()
    view = {column.key: getattr(rental, column.key) for column in Rental.__table__.columns}
    view["cost_so_far"] = _billing_call("cost_so_far", rental, now)
    view["credit_minutes_left"] = None
    if balance is not None and rental.status == ACTIVE:
        view["credit_minutes_left"] = _billing_call(
            "credit_minutes_left", balance, rental.cost_per_hour
        )
    return view


def _billing_call(name: str, *args: Any) -> Any:
    """Billing's read helpers; None when billing does not provide them."""
    from app.billing import service as billing

    try:
        return getattr(billing, name)(*args)
    except NotImplementedError:
        return None


# ---------------------------------------------------------------------------- worker side
@dataclass
class Outcome:
    """What to do after the transaction commits."""

    node_id: uuid.UUID | None = None
    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    check_start_in: float | None = None  # seconds until the start timeout check

    def command(self, node_id: uuid.UUID, event: str, data: dict[str, Any]) -> Outcome:
        self.node_id = node_id
        self.commands.append((event, data))
        return self


def _lock_rental(session: Session, rental_id: uuid.UUID | str) -> Rental | None:
    try:
        key = uuid.UUID(str(rental_id))
    except ValueError:
        log.warning("rental id is not a UUID", extra={"rental_id": str(rental_id)[:64]})
        return None
    return session.execute(
        select(Rental).where(Rental.id == key).with_for_update()
    ).scalar_one_or_none()


def _lock_node(session: Session, node_id: uuid.UUID) -> HostNode:
    return session.execute(
        select(HostNode).where(HostNode.id == node_id).with_for_update()
    ).scalar_one()


def _free_node(session: Session, node: HostNode, rental: Rental) -> None:
    """The rental no longer holds the node: busy goes back to online; offline stays offline."""
    if node.status == NodeStatus.BUSY:
        transition_node(session, node, NodeStatus.ONLINE, reason=f"rental {rental.id} ended")


def _stop_command(rental: Rental) -> tuple[str, dict[str, Any]]:
    return "stop_instance", {"rental_id": str(rental.id), "container_id": rental.container_id}


def _cancel(session: Session, rental: Rental, node: HostNode, reason: str) -> None:
    transition_rental(session, rental, CANCELLED, reason=reason)
    release_ports(session, rental_id=rental.id)
    _free_node(session, node, rental)


def _complete(
    session: Session,
    rental: Rental,
    node: HostNode,
    *,
    reason: str | None,
    at: datetime | None = None,
    bill_until: datetime | None = None,
) -> None:
    end = at or utcnow()
    transition_rental(session, rental, COMPLETED, reason=reason, at=end)
    _settle(session, rental, bill_until or end)
    release_ports(session, rental_id=rental.id)
    _free_node(session, node, rental)


def _settle(session: Session, rental: Rental, until: datetime) -> None:
    from app.billing import service as billing

    try:
        billing.settle_rental(session, rental, until)
    except NotImplementedError:
        log.warning("billing does not settle rentals yet", extra={"rental_id": str(rental.id)})


def provision(session: Session, *, rental_id: str, settings: Settings) -> Outcome:
    """Reserve the node, allocate the public ports and prepare start_instance.

    Safe to run again for the same rental: the node is already ours, the ports already
    allocated are kept, and the start command is sent again (the agent ignores a repeat).
    """
    outcome = Outcome()
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != PENDING:
        return outcome
    node = _lock_node(session, rental.node_id)
    if rental.stop_requested_at is not None:
        _cancel(session, rental, node, rental.stop_reason or "stopped before it started")
        return outcome
    if node.status != NodeStatus.BUSY:
        problem = _unavailable_reason(node)
        if problem is not None:
            _cancel(session, rental, node, problem)
            return outcome
        transition_node(session, node, NodeStatus.BUSY, reason=f"rental {rental.id}")
    try:
        mapping = allocate_ports(session, rental=rental, port_range=settings.proxy_port_range)
    except PortPoolExhausted:
        _cancel(session, rental, node, "no free public port; try again later")
        return outcome
    data = {
        "rental_id": str(rental.id),
        "image": rental.image,
        "command": rental.command,
        "resource_limits": _resource_limits(node),
        "env_vars": dict(rental.env or {}),
        "proxy_port_mapping": {str(c): p for c, p in sorted(mapping.items())},
        "tunnel": tunnel_settings(session, node_id=node.id, settings=settings),
    }
    elapsed = (utcnow() - rental.created_at).total_seconds()
    outcome.check_start_in = max(0.0, settings.rental_start_timeout_seconds - elapsed)
    return outcome.command(node.id, "start_instance", data)


def _unavailable_reason(node: HostNode) -> str | None:
    if node.maintenance or node.status == NodeStatus.MAINTENANCE:
        return "the node went into maintenance before the rental started"
    if node.draining:
        return "the node is draining"
    if node.status != NodeStatus.ONLINE:
        return "the node went offline before the rental started"
    return None


def _resource_limits(node: HostNode) -> dict[str, Any]:
    """A rental takes the whole node: every GPU, its cores and its memory."""
    specs = node.specs or {}
    limits: dict[str, Any] = {
        "gpu_indices": [str(i) for i in range(int(specs.get("gpu_count") or 0))]
    }
    if specs.get("cpu_cores"):
        limits["cpu_cores"] = float(specs["cpu_cores"])
    if specs.get("ram_gb"):
        limits["ram_limit"] = f"{max(1, int(Decimal(str(specs['ram_gb'])) * 1024))}m"
    return limits


def connection_info(mapping: dict[int, int], host: str) -> dict[str, Any]:
    info: dict[str, Any] = {"host": host, "ports": {str(c): p for c, p in sorted(mapping.items())}}
    if 22 in mapping:
        info["ssh"] = f"ssh -p {mapping[22]} root@{host}"
    return info


def started(
    session: Session, *, node_id: str, rental_id: str, container_id: str, settings: Settings
) -> Outcome:
    """instance_started: the rental is active from now, reachable on its public ports."""
    outcome = Outcome()
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id):
        log.warning(
            "instance_started for an unknown rental",
            extra={"rental_id": rental_id, "node_id": node_id},
        )
        return outcome
    if rental.status == PENDING:
        rental.container_id = container_id[:128]
        rental.connection_info = connection_info(
            live_ports(session, rental_id=rental.id), settings.public_proxy_host
        )
        transition_rental(session, rental, ACTIVE)
        if rental.stop_requested_at is not None:  # a stop raced the start: carry it out now
            return outcome.command(rental.node_id, *_stop_command(rental))
        return outcome
    if rental.status in (CANCELLED, COMPLETED) and rental.container_id in (None, container_id):
        # Started after we gave up on it (timeout or stop): the container must not run.
        rental.container_id = rental.container_id or container_id[:128]
        return outcome.command(rental.node_id, *_stop_command(rental))
    return outcome


def failed(session: Session, *, node_id: str, rental_id: str, reason: str) -> Outcome:
    """instance_failed: a rental that never ran is cancelled with the agent's reason."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id) or rental.status != PENDING:
        return Outcome()
    node = _lock_node(session, rental.node_id)
    _cancel(session, rental, node, f"the instance failed to start: {reason}")
    return Outcome()


def stopped(
    session: Session,
    *,
    node_id: str,
    rental_id: str,
    container_id: str | None,
    exit_code: int | None,
) -> Outcome:
    """instance_stopped: the container is gone, asked to or by itself."""
    rental = _lock_rental(session, rental_id)
    if rental is None or str(rental.node_id) != str(node_id) or rental.status not in LIVE:
        return Outcome()
    if container_id and rental.container_id and container_id != rental.container_id:
        log.warning(
            "instance_stopped for another container of the rental", extra={"rental_id": rental_id}
        )
        return Outcome()
    node = _lock_node(session, rental.node_id)
    rental.exit_code = exit_code
    if rental.status == PENDING:
        _cancel(session, rental, node, rental.stop_reason or _exit_text(exit_code, before=True))
    elif rental.stop_requested_at is not None:
        _complete(session, rental, node, reason=rental.stop_reason)
    else:
        _complete(session, rental, node, reason=_exit_text(exit_code, before=False))
    return Outcome()


def _exit_text(exit_code: int | None, *, before: bool) -> str:
    when = "before it was reported running" if before else "by itself"
    code = f" with code {exit_code}" if exit_code is not None else ""
    return f"the container exited {when}{code}"


def stop(session: Session, *, rental_id: str, reason: str | None) -> Outcome:
    """Stop a rental: a pending one is cancelled now; an active one is told to stop."""
    outcome = Outcome()
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status not in LIVE:
        return outcome
    if rental.stop_requested_at is None:
        rental.stop_requested_at = utcnow()
    if reason and not rental.stop_reason:
        rental.stop_reason = reason[:2000]
    if rental.status == PENDING:
        node = _lock_node(session, rental.node_id)
        _cancel(session, rental, node, rental.stop_reason or "stopped before it started")
    # A pending rental's container may be starting already: tell the agent either way.
    return outcome.command(rental.node_id, *_stop_command(rental))


def check_start(session: Session, *, rental_id: str, settings: Settings) -> Outcome:
    """Cancel a rental still pending after RENTAL_START_TIMEOUT_SECONDS."""
    outcome = Outcome()
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != PENDING:
        return outcome
    timeout = settings.rental_start_timeout_seconds
    remaining = timeout - (utcnow() - rental.created_at).total_seconds()
    if remaining > 0:
        outcome.check_start_in = remaining
        return outcome
    node = _lock_node(session, rental.node_id)
    _cancel(session, rental, node, f"the node did not start the instance within {timeout} s")
    return outcome.command(rental.node_id, *_stop_command(rental))


def overdue_pending_rentals(session: Session, *, settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=settings.rental_start_timeout_seconds)
    return [
        str(i)
        for i in session.execute(
            select(Rental.id).where(Rental.status == PENDING, Rental.created_at <= cutoff)
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


def end_on_offline_node(session: Session, *, rental_id: str, settings: Settings) -> Outcome:
    """End an active rental whose node stayed offline past the grace period.

    Billing stops at the node's last heartbeat; the agent is told to stop the container when it
    comes back (the command waits in the node's stream).
    """
    outcome = Outcome()
    rental = _lock_rental(session, rental_id)
    if rental is None or rental.status != ACTIVE:
        return outcome
    node = _lock_node(session, rental.node_id)
    now = utcnow()
    since = node.status_changed_at or node.last_seen_at
    grace = timedelta(seconds=settings.rental_offline_grace_seconds)
    if node.status != NodeStatus.OFFLINE or since is None or now - since < grace:
        return outcome
    last_seen = node.last_seen_at or since
    bill_until = max(rental.start_time or last_seen, min(last_seen, now))
    _complete(session, rental, node, reason=NODE_OFFLINE, at=now, bill_until=bill_until)
    return outcome.command(rental.node_id, *_stop_command(rental))
