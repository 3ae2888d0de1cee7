from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app import idempotency
from app.auth.current import BEARER_AUTH, current_user, is_admin, login_required
from app.billing.accrued import balance_of
from app.db import utcnow
from app.enums import RentalStatus
from app.fleet import maintenance
from app.pagination import PageArgsSchema
from app.rentals import logs, service
from app.rentals.actors import provision_rental, stop_rental
from app.rentals.schemas import (
    HostRentalListSchema,
    RentalCreateSchema,
    RentalEnvelopeSchema,
    RentalListSchema,
    RentalLogsArgsSchema,
    RentalLogsSchema,
    RentalQueryArgsSchema,
)
from app.rentals.state import LIVE
from app.web import db_session

blp = Blueprint("rentals", __name__, url_prefix="/api/v1", description="Rentals")


def _with_maintenance(session: Any, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Show live rentals the maintenance announced on their node (they end when it starts)."""
    live = [v for v in views if v["status"] in LIVE]
    windows = maintenance.upcoming(session, [v["node_id"] for v in live], now=utcnow())
    for view in views:
        view["maintenance"] = (
            maintenance.window_view(windows.get(view["node_id"])) if view in live else None
        )
    return views


@blp.route("/rentals")
class Rentals(MethodView):
    decorators = [login_required]

    @blp.arguments(RentalQueryArgsSchema, location="query")
    @blp.response(200, RentalListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my rentals, newest first."""
        user = current_user()
        items, next_cursor = service.list_rentals(db_session(), renter=user, **args)
        balance = balance_of(db_session(), user.id)
        views = [service.rental_view(r, balance=balance) for r in items]
        return {"items": _with_maintenance(db_session(), views), "next_cursor": next_cursor}

    @blp.arguments(RentalCreateSchema)
    @blp.response(202, RentalEnvelopeSchema)
    @blp.doc(security=BEARER_AUTH, parameters=[idempotency.OPENAPI_HEADER])
    @idempotency.idempotent("POST /rentals", RentalEnvelopeSchema, 202)
    def post(self, data):
        """Rent a node: the rental starts pending and becomes active once its container runs."""
        session = db_session()
        user = current_user()
        maintenance.refuse_rental_across(
            session,
            node_id=data["node_id"],
            accepted=data.pop("accept_maintenance", False),
            now=utcnow(),
        )
        rental = service.create_rental(
            session, renter=user, settings=current_app.config["DC_SETTINGS"], **data
        )
        provision_rental.send_after_commit(session, rental_id=str(rental.id))
        view = service.rental_view(rental, balance=balance_of(db_session(), user.id))
        return {"rental": _with_maintenance(session, [view])[0]}


@blp.route("/rentals/<uuid:rental_id>")
class RentalById(MethodView):
    decorators = [login_required]

    @blp.response(200, RentalEnvelopeSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, rental_id: uuid.UUID):
        """Show one of my rentals with its cost so far and connection details."""
        user = current_user()
        rental = service.get_rental(
            db_session(), user=user, rental_id=rental_id, admin=is_admin(user)
        )
        balance = balance_of(db_session(), user.id) if rental.renter_id == user.id else None
        view = service.rental_view(rental, balance=balance)
        return {"rental": _with_maintenance(db_session(), [view])[0]}


@blp.route("/rentals/<uuid:rental_id>/logs")
class RentalLogs(MethodView):
    decorators = [login_required]

    @blp.arguments(RentalLogsArgsSchema, location="query")
    @blp.response(200, RentalLogsSchema)
    @blp.alt_response(504, description="The node did not answer in time (JSON error).")
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, rental_id: uuid.UUID):
        """The container's output: asked of the node while the rental runs, kept after it ends.

        At most `tail` lines and 64 KiB; `truncated` says when more was left out.
        """
        session = db_session()
        rental = service.get_rental(session, user=current_user(), rental_id=rental_id)
        tail = args["tail"]
        if rental.status == RentalStatus.ACTIVE:
            node_id, rental_key = rental.node_id, rental.id
            session.rollback()  # no database connection held while the agent is asked
            settings = current_app.config["DC_SETTINGS"]
            lines, truncated = logs.fetch_live(
                node_id, rental_key, tail=tail, timeout=settings.logs_timeout_seconds
            )
            if lines:
                return {"lines": lines, "truncated": truncated}
            # The container may have just stopped: what it left is kept.
        lines, truncated = logs.final_lines(session, rental_id, tail=tail)
        return {"lines": lines, "truncated": truncated}


@blp.route("/rentals/<uuid:rental_id>/stop")
class RentalStop(MethodView):
    decorators = [login_required]

    @blp.response(202, RentalEnvelopeSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, rental_id: uuid.UUID):
        """Stop a rental (a pending one is cancelled); asking again changes nothing."""
        session = db_session()
        user = current_user()
        admin = is_admin(user)
        rental = service.get_rental(session, user=user, rental_id=rental_id, admin=admin, lock=True)
        reason = "stopped by an administrator" if admin and rental.renter_id != user.id else None
        if service.request_stop(session, rental=rental, reason=reason):
            stop_rental.send_after_commit(session, rental_id=str(rental.id), reason=reason)
        session.commit()
        balance = balance_of(db_session(), user.id) if rental.renter_id == user.id else None
        return {"rental": service.rental_view(rental, balance=balance)}


@blp.route("/nodes/<uuid:node_id>/rentals")
class NodeRentals(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, HostRentalListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, node_id: uuid.UUID):
        """List the rentals on one of my nodes, newest first."""
        items, next_cursor = service.list_node_rentals(
            db_session(), owner=current_user(), node_id=node_id, **args
        )
        return {"items": items, "next_cursor": next_cursor}
