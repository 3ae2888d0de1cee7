"""The `start_instance` command of a rental: built here for the agent and, before the rental is
accepted, to check that it fits the protocol's frame limit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from agent.protocol import MAX_FRAME_BYTES, encode
from app.config import Settings
from app.db import utcnow
from app.errors import ValidationFailed
from app.fleet.models import HostNode
from app.proxy.service import tunnel_settings
from app.rentals import gpus
from app.rentals.models import Rental

# The longest public port a mapping can hold, for the size check before ports are allocated.
_WIDEST_PORT = 65535


def start_deadline(rental: Rental, settings: Settings) -> datetime:
    """After this the rental is cancelled, so a start that arrives later must not run.

    The start timeout counts from the rental's creation or from the last progress the agent
    reported (a long pull that keeps moving is not cancelled).
    """
    since = rental.created_at or utcnow()  # (not flushed yet: the size check)
    if rental.last_progress_at is not None and rental.last_progress_at > since:
        since = rental.last_progress_at
    return since + timedelta(seconds=settings.rental_start_timeout_seconds)


def start_instance_data(
    session: Session,
    *,
    rental: Rental,
    node: HostNode,
    mapping: dict[int, int],
    settings: Settings,
    ssh_keys: list[str] | None = None,
    registry_auth: dict[str, str] | None = None,
    assigned: list[tuple[int, str | None]] | None = None,
) -> dict[str, Any]:
    """The start_instance payload: `ssh_keys` are the rental's merged with the account's,
    `registry_auth` the opened credentials and `assigned` its GPUs as (index, uuid) (all decided
    by the caller; without `assigned`, the GPUs it would get on an idle node)."""
    if assigned is None:
        assigned = gpus.stand_in(node, rental.gpu_count)
    return {
        "rental_id": str(rental.id),
        "image": rental.image,
        "command": rental.command,
        "resource_limits": gpus.share(node, rental.gpu_count, assigned),
        "env_vars": dict(rental.env or {}),
        "proxy_port_mapping": {str(c): p for c, p in sorted(mapping.items())},
        "tunnel": tunnel_settings(session, node_id=node.id, settings=settings),
        "entrypoint": rental.entrypoint,
        "onstart": rental.onstart,
        "ssh_keys": ssh_keys if ssh_keys is not None else list(rental.ssh_keys or []),
        "registry_auth": registry_auth,
        "expires_at": start_deadline(rental, settings).isoformat(),
    }


def start_frame_bytes(
    session: Session, *, rental: Rental, node: HostNode, settings: Settings
) -> int:
    """How large the rental's start_instance frame will be, its ports at their widest."""
    mapping = {int(port): _WIDEST_PORT for port in rental.ports or []}
    # The sealed credentials are longer than the clear ones: a safe stand-in for the size.
    sealed = rental.registry_auth_sealed
    stand_in = {"username": "stand-in", "password": sealed} if sealed else None
    data = start_instance_data(
        session,
        rental=rental,
        node=node,
        mapping=mapping,
        settings=settings,
        registry_auth=stand_in,
    )
    return len(encode("start_instance", data, id=str(uuid.uuid4())).encode())


def check_fits(session: Session, *, rental: Rental, node: HostNode, settings: Settings) -> None:
    """422 when the rental's start command would not fit one frame (the agent could not read
    it: the rental would never start)."""
    size = start_frame_bytes(session, rental=rental, node=node, settings=settings)
    if size > MAX_FRAME_BYTES:
        raise ValidationFailed(
            f"The rental's start command would be {size} bytes; the agent protocol carries at "
            f"most {MAX_FRAME_BYTES}. Shorten env, command or the other launch options.",
            errors={"env": [f"The launch options together exceed {MAX_FRAME_BYTES} bytes."]},
        )
