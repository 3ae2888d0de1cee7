"""A rental's share of its node: how many GPUs it asks for, what it pays, which GPUs it gets.

Three steps, each under the node's row lock:

* :func:`reserve` (the API, when the rental is written): the count. `HostNode.gpus_in_use` goes up
  by the rental's GPUs, or a 409 when fewer are free. Concurrent requests queue on the node's lock,
  so a node is never promised more GPUs than it has.
* :func:`assign` (the worker, when it provisions the rental): the concrete GPUs, by index and by the
  UUID the agent detected, lowest free indices first. A repeat returns what the rental already
  holds; the partial unique index on ``rental_gpus`` keeps one GPU with one live rental whatever
  happens.
* :func:`release` (:func:`app.rentals.state.transition_rental`, when the rental ends): both, in the
  same transaction as the end.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.errors import Conflict, ValidationFailed
from app.fleet.capacity import capacity, gpu_total, units
from app.fleet.events import node_changed
from app.fleet.models import HostNode
from app.money import quantize
from app.rentals.models import Rental, RentalGpu


class NoFreeGpu(Exception):
    """The node has fewer free GPUs than the rental holds (its agent reports fewer GPUs than
    its host declared)."""


def requested(node: HostNode, gpu_count: int | None) -> int:
    """The GPUs a request takes: all of the node's by default; 422 when it cannot be served."""
    total = gpu_total(node)
    if gpu_count is None:
        return total
    if total == 0 and gpu_count > 0:
        raise _invalid("This node has no GPUs; it is rented whole (leave gpu_count out or send 0).")
    if total > 0 and gpu_count < 1:
        raise _invalid("gpu_count must be at least 1 on a GPU node.")
    if gpu_count > total:
        raise _invalid(f"gpu_count is {gpu_count}; this node has {total} GPUs.")
    return gpu_count


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={"json": {"gpu_count": [message]}})


def price(node: HostNode, gpu_count: int) -> Decimal:
    """The rental's hourly price: the node's rate for the whole machine, times its share."""
    rate = Decimal(
        node.hourly_rate if node.hourly_rate is not None else node.pricing["hourly_rate"]
    )
    total = gpu_total(node)
    if total == 0 or gpu_count >= total:
        return quantize(rate)
    return quantize(rate * gpu_count / total)


def reserve(session: Session, node: HostNode, gpu_count: int) -> None:
    """Count `gpu_count` GPUs of `node` (locked by the caller) as taken; 409 when not free."""
    free = capacity(node) - int(node.gpus_in_use or 0)
    if units(gpu_count) > free:
        if free <= 0:
            raise Conflict("The node is already rented: none of its GPUs is free.")
        total = gpu_total(node)
        raise Conflict(
            f"Only {free} of the node's {total} GPUs are free now; ask for gpu_count of at "
            f"most {free}, or choose another node."
        )
    node.gpus_in_use = int(node.gpus_in_use or 0) + units(gpu_count)
    session.flush()


def held(session: Session, rental_id: uuid.UUID) -> list[RentalGpu]:
    """The GPUs the rental holds now, by index."""
    return list(
        session.execute(
            select(RentalGpu)
            .where(RentalGpu.rental_id == rental_id, RentalGpu.released_at.is_(None))
            .order_by(RentalGpu.gpu_index)
        ).scalars()
    )


def node_gpus(node: HostNode) -> list[tuple[int, str | None]]:
    """The node's GPUs as (index, uuid): as its agent detected them, else 0..n-1 as declared."""
    detected = (node.detected_specs or {}).get("gpus") or []
    found: dict[int, str | None] = {}
    for gpu in detected:
        if isinstance(gpu, dict) and isinstance(gpu.get("index"), int):
            found.setdefault(int(gpu["index"]), str(gpu.get("uuid") or "") or None)
    if not found:
        found = {index: None for index in range(gpu_total(node))}
    return sorted(found.items())


def assign(session: Session, rental: Rental, node: HostNode) -> list[RentalGpu]:
    """Give the rental its GPUs (the node locked by the caller); the ones it has on a repeat.

    NoFreeGpu when the node does not have enough free ones."""
    mine = held(session, rental.id)
    if len(mine) >= rental.gpu_count:
        return mine
    taken = set(
        session.execute(
            select(RentalGpu.gpu_index).where(
                RentalGpu.node_id == node.id,
                RentalGpu.released_at.is_(None),
                RentalGpu.rental_id != rental.id,
            )
        ).scalars()
    )
    have = {gpu.gpu_index for gpu in mine}
    free = [(i, u) for i, u in node_gpus(node) if i not in taken and i not in have]
    wanted = rental.gpu_count - len(mine)
    if len(free) < wanted:
        raise NoFreeGpu(f"the node has {len(free)} free GPUs for the {wanted} this rental needs")
    for index, gpu_uuid in free[:wanted]:
        row = RentalGpu(rental_id=rental.id, node_id=node.id, gpu_index=index, gpu_uuid=gpu_uuid)
        session.add(row)
        mine.append(row)
    session.flush()
    return sorted(mine, key=lambda gpu: gpu.gpu_index)


def release(session: Session, rental: Rental, at: datetime) -> None:
    """The rental ended: its GPUs go back to the node (in the caller's transaction)."""
    session.execute(
        update(RentalGpu)
        .where(RentalGpu.rental_id == rental.id, RentalGpu.released_at.is_(None))
        .values(released_at=at)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HostNode)
        .where(HostNode.id == rental.node_id)
        .values(gpus_in_use=func.greatest(HostNode.gpus_in_use - units(rental.gpu_count), 0))
        .execution_options(synchronize_session="fetch")
    )
    node_changed(session, rental.node_id)  # its GPUs are offered again once this commits


def share(node: HostNode, gpu_count: int, gpus: list[tuple[int, str | None]]) -> dict[str, Any]:
    """The container limits of a rental of `gpu_count` GPUs: those GPUs and the same share of
    the node's CPU cores (rounded down, at least 1) and RAM (rounded down to MiB)."""
    specs = node.specs or {}
    total = gpu_total(node)
    part = Fraction(1) if total == 0 or gpu_count >= total else Fraction(gpu_count, total)
    limits: dict[str, Any] = {"gpu_indices": [str(index) for index, _ in gpus]}
    uuids = [gpu_uuid for _, gpu_uuid in gpus if gpu_uuid]
    if uuids and len(uuids) == len(gpus):
        limits["gpu_uuids"] = uuids
    if specs.get("cpu_cores"):
        cores = float(specs["cpu_cores"])
        limits["cpu_cores"] = cores if part == 1 else float(max(1, math.floor(cores * part)))
    if specs.get("ram_gb"):
        ram_mb = Decimal(str(specs["ram_gb"])) * 1024 * part.numerator / part.denominator
        limits["ram_limit"] = f"{max(1, int(ram_mb))}m"
    return limits


def stand_in(node: HostNode, gpu_count: int) -> list[tuple[int, str | None]]:
    """The GPUs a rental of `gpu_count` would get on an idle node (for sizing its command)."""
    return node_gpus(node)[:gpu_count]
