"""Announced maintenance windows: notice, the renters' view, and the periodic job's steps.
Functions never commit.

A window is announced at least MAINTENANCE_NOTICE_HOURS ahead. Until it starts, offers show
`available_until` and a rental is created only when the renter accepts that it ends at the
window's start. The periodic job (app/fleet/actors.py: run_maintenance_windows) begins a window
up to STOP_LEAD_SECONDS early: the node leaves the market and its rentals are stopped with the
reason `maintenance`, so they have ended, and stopped being billed, when the window starts. Once
the window is over the node is offered again. Time inside a window does not count against the
node's reliability (app/marketplace/reliability.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.enums import NodeStatus
from app.errors import Conflict, NotFound, ValidationFailed
from app.fleet.events import node_changed
from app.fleet.models import HostNode, MaintenanceWindow
from app.fleet.service import set_maintenance
from app.fleet.state import transition_node
from app.pagination import newest_first_page
from app.rentals.service import live_rentals_for_node

INTERVAL_SECONDS = 30  # how often the job looks for windows to begin or end
# Rentals are stopped this long before a window starts: a job interval plus the stop's grace.
STOP_LEAD_SECONDS = 60
MAX_WINDOW = timedelta(days=30)
MAINTENANCE_REASON = "maintenance"


def _open(now: datetime) -> Any:
    """Windows that still matter: not cancelled, not over."""
    return (
        MaintenanceWindow.cancelled_at.is_(None),
        MaintenanceWindow.finished_at.is_(None),
        MaintenanceWindow.ends_at > now,
    )


def announce(
    session: Session,
    *,
    node: HostNode,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    settings: Settings,
    now: datetime,
) -> MaintenanceWindow:
    """Announce a window on `node` (locked by the caller); 422 without enough notice, 409 when
    it overlaps another."""
    notice = timedelta(hours=settings.maintenance_notice_hours)
    if starts_at < now + notice:
        raise ValidationFailed(
            f"A maintenance window needs {settings.maintenance_notice_hours} hours of notice: "
            f"start it at {(now + notice).isoformat()} or later.",
            errors={"starts_at": [f"At least {settings.maintenance_notice_hours} hours ahead."]},
        )
    if ends_at <= starts_at:
        raise ValidationFailed(
            "ends_at must be after starts_at.", errors={"ends_at": ["Must be after starts_at."]}
        )
    if ends_at - starts_at > MAX_WINDOW:
        raise ValidationFailed(
            f"A maintenance window lasts at most {MAX_WINDOW.days} days.",
            errors={"ends_at": [f"At most {MAX_WINDOW.days} days after starts_at."]},
        )
    overlapping = session.execute(
        select(MaintenanceWindow.id).where(
            MaintenanceWindow.node_id == node.id,
            *_open(now),
            MaintenanceWindow.starts_at < ends_at,
            MaintenanceWindow.ends_at > starts_at,
        )
    ).first()
    if overlapping is not None:
        raise Conflict(f"The window overlaps maintenance window {overlapping[0]}.")
    window = MaintenanceWindow(node_id=node.id, starts_at=starts_at, ends_at=ends_at, reason=reason)
    session.add(window)
    node_changed(session, node.id)  # offers show available_until
    session.flush()
    session.refresh(window)
    return window


def list_windows(
    session: Session, *, node_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[MaintenanceWindow], str | None]:
    query = select(MaintenanceWindow).where(MaintenanceWindow.node_id == node_id)
    return newest_first_page(session, query, MaintenanceWindow, limit=limit, cursor=cursor)


def cancel(session: Session, *, node: HostNode, window_id: uuid.UUID, now: datetime) -> None:
    """Cancel a window (one in progress ends now and the node is offered again); asking
    again changes nothing. `node` is locked by the caller."""
    window = session.execute(
        select(MaintenanceWindow)
        .where(MaintenanceWindow.id == window_id, MaintenanceWindow.node_id == node.id)
        .with_for_update()
    ).scalar_one_or_none()
    if window is None:
        raise NotFound("No such maintenance window.")
    if window.cancelled_at is not None or window.finished_at is not None:
        return
    window.cancelled_at = now
    if window.began_at is not None:
        window.finished_at = now
        _give_back(session, node)
    node_changed(session, node.id)
    session.flush()


def window_status(window: MaintenanceWindow, now: datetime) -> str:
    if window.cancelled_at is not None:
        return "cancelled"
    if window.finished_at is not None or window.ends_at <= now:
        return "completed"
    if window.began_at is not None or window.starts_at <= now:
        return "in_progress"
    return "scheduled"


def upcoming(
    session: Session, node_ids: list[uuid.UUID], *, now: datetime
) -> dict[uuid.UUID, MaintenanceWindow]:
    """Each node's next window that is not over (the earliest), for the nodes that have one."""
    if not node_ids:
        return {}
    rows = session.execute(
        select(MaintenanceWindow)
        .where(MaintenanceWindow.node_id.in_(set(node_ids)), *_open(now))
        .order_by(MaintenanceWindow.starts_at.desc())
    ).scalars()
    return {window.node_id: window for window in rows}  # the earliest wins: it comes last


def window_view(window: MaintenanceWindow | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"starts_at": window.starts_at, "ends_at": window.ends_at, "reason": window.reason}


def refuse_rental_across(
    session: Session, *, node_id: uuid.UUID, accepted: bool, now: datetime
) -> None:
    """409 when the node has maintenance ahead and the renter did not accept that the rental
    ends at its start."""
    window = upcoming(session, [node_id], now=now).get(node_id)
    if window is None or accepted:
        return
    raise Conflict(
        f"The node has maintenance from {window.starts_at.isoformat()} to "
        f"{window.ends_at.isoformat()} ({window.reason}); send accept_maintenance: true to rent "
        "it until then (the rental ends when the window starts)."
    )


# ---------------------------------------------------------------- the periodic job's steps
def due_windows(session: Session, *, now: datetime) -> list[uuid.UUID]:
    """Windows to begin (starting within the lead), to watch (in progress) or to end."""
    lead = now + timedelta(seconds=STOP_LEAD_SECONDS)
    return list(
        session.execute(
            select(MaintenanceWindow.id)
            .where(
                MaintenanceWindow.cancelled_at.is_(None),
                MaintenanceWindow.finished_at.is_(None),
                MaintenanceWindow.starts_at <= lead,
            )
            .order_by(MaintenanceWindow.starts_at)
            .limit(1000)
        ).scalars()
    )


def apply_window(session: Session, *, window_id: uuid.UUID, now: datetime) -> list[str]:
    """Begin or end one window; return the rentals to stop (with the reason `maintenance`)."""
    window = session.execute(
        select(MaintenanceWindow)
        .where(MaintenanceWindow.id == window_id)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if window is None or window.cancelled_at is not None or window.finished_at is not None:
        return []
    node = session.execute(
        select(HostNode).where(HostNode.id == window.node_id).with_for_update()
    ).scalar_one()
    if window.ends_at <= now:
        window.began_at = window.began_at or now
        window.finished_at = now
        _give_back(session, node)
        return []
    if window.began_at is None:
        window.began_at = now
        node.maintenance = True
        node_changed(session, node.id)
    if node.status == NodeStatus.ONLINE:
        # A busy node goes online when its last rental ends; the next look moves it on.
        transition_node(session, node, NodeStatus.MAINTENANCE, reason="announced maintenance")
    session.flush()
    return [
        str(rental.id)
        for rental in live_rentals_for_node(session, node.id)
        if rental.stop_requested_at is None
    ]


def _give_back(session: Session, node: HostNode) -> None:
    if node.maintenance or node.status == NodeStatus.MAINTENANCE:
        set_maintenance(session, node, False)
    node_changed(session, node.id)
