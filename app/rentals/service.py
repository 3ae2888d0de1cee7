"""Rental requests from the API: create, show, list and ask to stop. Functions never commit.

What happens to a rental afterwards (provisioning, agent events, timeouts) is in
app/rentals/lifecycle.py, run by the actors in app/rentals/actors.py.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.ssh_keys import account_ssh_keys
from app.billing.accrued import balance_of
from app.billing.rules import cost_so_far, credit_minutes_left
from app.config import Settings
from app.db import utcnow
from app.enums import RentalStatus
from app.errors import Conflict, NotFound, PaymentRequired, TooManyRequests, ValidationFailed
from app.fleet.capacity import gpu_total, is_full
from app.fleet.events import node_changed
from app.fleet.models import HostNode
from app.money import quantize, to_wire
from app.pagination import newest_first_page
from app.proxy.service import ports_held_by
from app.rentals import gpus, launch
from app.rentals.availability import REQUEST_REFUSED, Unavailable, why_unavailable
from app.rentals.models import Rental
from app.rentals.schemas import RentalSchema
from app.rentals.start_command import check_fits
from app.rentals.state import ACTIVE, LIVE
from app.webhooks.events import record_event
from app.webhooks.models import EventType

log = logging.getLogger(__name__)
PRIVATE_COLUMNS = frozenset({"registry_auth_sealed"})  # never in a view, sealed or not


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
    entrypoint: list[str] | None = None,
    onstart: str | None = None,
    ssh_keys: list[str] | None = None,
    registry_auth: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    gpu_count: int | None = None,
) -> Rental:
    """Write a pending rental of `gpu_count` of the node's GPUs (default: all of them) at their
    share of the node's current price; the workers take it from there.

    The node's row lock (taken before the renter's, the order the workers use too) serialises
    requests for one node: its GPUs are counted and reserved (app/rentals/gpus.py) before the
    lock is released at commit."""
    keys = launch.dedupe_keys(ssh_keys or [])
    if len(launch.dedupe_keys(keys, account_ssh_keys(session, renter.id))) > launch.MAX_SSH_KEYS:
        raise ValidationFailed(
            f"A container takes at most {launch.MAX_SSH_KEYS} SSH keys, counting your "
            "account's keys: send fewer, or remove some from /me/ssh-keys.",
            errors={"json": {"ssh_keys": ["Too many SSH keys with your account's keys."]}},
        )
    sealed = None
    if registry_auth:
        try:
            sealed = launch.seal(registry_auth, settings)
        except launch.RegistryAuthUnavailable:
            raise ValidationFailed(
                "This platform does not accept registry credentials (no REGISTRY_AUTH_KEY).",
                errors={"json": {"registry_auth": ["Not accepted by this platform."]}},
            ) from None
    node = session.execute(
        select(HostNode).where(HostNode.id == node_id).with_for_update()
    ).scalar_one_or_none()
    if node is None:
        raise NotFound("No such node.")
    if node.owner_id == renter.id:
        raise Conflict("You cannot rent your own node.")
    problem = why_unavailable(node)
    if problem in (None, Unavailable.OFFLINE) and is_full(node):
        problem = Unavailable.BUSY
    if problem is not None and problem != Unavailable.BUSY:
        # Another host's node that is not on offer (offline, maintenance, draining, reconciling)
        # is not revealed: the same 404 as a node that does not exist.
        raise NotFound("No such node.")
    if problem is not None:
        raise Conflict(REQUEST_REFUSED[problem])
    count = gpus.requested(node, gpu_count)
    # The renter's row lock serialises their rent requests: the quota and balance checks below
    # count the live rentals committed before this one, so concurrent requests cannot overrun.
    renter = _lock_user(session, renter)
    _check_quotas(session, renter=renter, ports=len(ports), settings=settings)
    price = gpus.price(node, count)
    if max_hourly_rate is not None and price > max_hourly_rate:
        raise Conflict(
            f"The price of {_share(node, count)} is now {to_wire(price)} per hour, above your "
            f"max_hourly_rate of {to_wire(max_hourly_rate)}."
        )
    _check_balance(session, renter=renter, price=price, minutes=settings.min_balance_minutes)

    rental = Rental(
        id=uuid.uuid4(),
        renter_id=renter.id,
        node_id=node.id,
        status=RentalStatus.PENDING,
        image=image,
        command=command,
        env=dict(env),
        ports=list(ports),
        cost_per_hour=price,
        gpu_count=count,
        entrypoint=entrypoint,
        onstart=onstart,
        ssh_keys=keys,
        registry_auth_sealed=sealed,
        labels=dict(labels or {}),
    )
    check_fits(session, rental=rental, node=node, settings=settings)
    gpus.reserve(session, node, count)
    session.add(rental)
    session.flush()
    session.refresh(rental)
    node_changed(session, node.id)  # its free GPUs changed: the offers cache goes stale
    return rental


def _share(node: HostNode, count: int) -> str:
    total = gpu_total(node)
    if total == 0 or count >= total:
        return "the node"
    return f"{count} of the node's {total} GPUs"


def _lock_user(session: Session, user: User) -> User:
    locked = session.execute(
        select(User)
        .where(User.id == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    return locked


def _check_quotas(session: Session, *, renter: User, ports: int, settings: Settings) -> None:
    """At most MAX_LIVE_RENTALS_PER_USER live rentals and MAX_PORTS_PER_USER public ports."""
    live = session.execute(
        select(func.count())
        .select_from(Rental)
        .where(Rental.renter_id == renter.id, Rental.status.in_(LIVE))
    ).scalar_one()
    if live >= settings.max_live_rentals_per_user:
        raise TooManyRequests(
            f"You have {live} pending or active rentals, the most one account may hold "
            f"({settings.max_live_rentals_per_user}). Stop one before renting another."
        )
    held = ports_held_by(session, renter_id=renter.id)
    if held + ports > settings.max_ports_per_user:
        raise TooManyRequests(
            f"This rental asks for {ports} public ports and your live rentals hold {held}; one "
            f"account may hold at most {settings.max_ports_per_user}. Stop a rental or ask "
            "for fewer ports."
        )


def _check_balance(session: Session, *, renter: User, price: Decimal, minutes: int) -> None:
    """The balance must cover `minutes` of this rental plus every live rental the renter has."""
    running = session.execute(
        select(func.coalesce(func.sum(Rental.cost_per_hour), 0)).where(
            Rental.renter_id == renter.id, Rental.status.in_(LIVE)
        )
    ).scalar_one()
    required = quantize((Decimal(running) + price) * minutes / 60)
    balance = balance_of(session, renter.id)  # posted, less what the running rentals owe
    if balance < required:
        raise PaymentRequired(
            f"Your balance of {to_wire(balance)} does not cover {minutes} minutes at "
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
        rental_event(session, rental, EventType.RENTAL_STOP_REQUESTED)
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
    label: list[tuple[str, str]] | None = None,
) -> tuple[list[Rental], str | None]:
    query = select(Rental).where(Rental.renter_id == renter.id)
    if status is not None:
        query = query.where(Rental.status == status)
    if label:
        # One containment test for every filter (all must match), served by the GIN index.
        query = query.where(Rental.labels.contains(dict(label)))
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
    """The node's pending or active rentals (one per share of its GPUs)."""
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
    view = {
        column.key: getattr(rental, column.key)
        for column in Rental.__table__.columns
        if column.key not in PRIVATE_COLUMNS
    }
    if rental.status == ACTIVE and rental.stop_requested_at is not None:
        view["phase"] = "stopping"
    if view["phase"] != "pulling":
        view["progress"] = None
    view["cost_so_far"] = cost_so_far(rental, now)
    view["credit_minutes_left"] = None
    if balance is not None and rental.status == ACTIVE:
        view["credit_minutes_left"] = credit_minutes_left(balance, rental.cost_per_hour)
    return view


def rental_event(session: Session, rental: Rental, type: EventType) -> uuid.UUID | None:
    """Record a webhook event for the rental's renter, in this transaction (the outbox).

    The data is the rental as the API shows it, without `env` (it may hold credentials and is
    large); `rental.completed` adds `cost`; `rental.failed` carries the rental's `failure_code`.
    """

    def data() -> dict[str, Any]:
        view: dict[str, Any] = RentalSchema(exclude=("env",)).dump(
            rental_view(rental, balance=None)
        )
        if type == EventType.RENTAL_COMPLETED:
            view["cost"] = to_wire(Decimal(rental.billed_amount or 0))
        return view

    return record_event(session, user_id=rental.renter_id, type=type, data=data)
