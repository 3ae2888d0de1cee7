"""The hosts' routes: self-tests of a node and its announced maintenance windows."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app.auth.current import BEARER_AUTH, current_user, login_required
from app.db import utcnow
from app.fleet import maintenance, selftest, service
from app.fleet.host_schemas import (
    MaintenanceCreateSchema,
    MaintenanceListSchema,
    MaintenanceWindowSchema,
    SelfTestListSchema,
    SelfTestQueuedSchema,
)
from app.fleet.models import MaintenanceWindow
from app.pagination import PageArgsSchema
from app.web import db_session

blp = Blueprint("hosts", __name__, url_prefix="/api/v1", description="Self-tests and maintenance")


@blp.route("/nodes/<uuid:node_id>/self-test")
class NodeSelfTestRequest(MethodView):
    decorators = [login_required]

    @blp.response(202, SelfTestQueuedSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, node_id: uuid.UUID):
        """Run the node's self-test (a run already queued or running is returned instead)."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id, lock=True)
        run = selftest.request_run(
            session, node=node, trigger="owner", settings=current_app.config["DC_SETTINGS"]
        )
        session.commit()
        return {"id": run.id, "status": run.status}


@blp.route("/nodes/<uuid:node_id>/self-tests")
class NodeSelfTests(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, SelfTestListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, node_id: uuid.UUID):
        """List the node's self-tests, newest first."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id)
        items, next_cursor = selftest.list_runs(session, node_id=node.id, **args)
        return {"items": items, "next_cursor": next_cursor}


def _window(window: MaintenanceWindow) -> dict[str, Any]:
    view = {
        column.key: getattr(window, column.key) for column in MaintenanceWindow.__table__.columns
    }
    view["status"] = maintenance.window_status(window, utcnow())
    return view


@blp.route("/nodes/<uuid:node_id>/maintenance")
class NodeMaintenance(MethodView):
    decorators = [login_required]

    @blp.arguments(MaintenanceCreateSchema)
    @blp.response(201, MaintenanceWindowSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, data, node_id: uuid.UUID):
        """Announce a maintenance window (at least MAINTENANCE_NOTICE_HOURS ahead)."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id, lock=True)
        window = maintenance.announce(
            session, node=node, settings=current_app.config["DC_SETTINGS"], now=utcnow(), **data
        )
        session.commit()
        return _window(window)

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, MaintenanceListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, node_id: uuid.UUID):
        """List the node's maintenance windows, newest announcement first."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id)
        items, next_cursor = maintenance.list_windows(session, node_id=node.id, **args)
        return {"items": [_window(w) for w in items], "next_cursor": next_cursor}


@blp.route("/nodes/<uuid:node_id>/maintenance/<uuid:window_id>")
class NodeMaintenanceWindow(MethodView):
    decorators = [login_required]

    @blp.response(204)
    @blp.doc(security=BEARER_AUTH)
    def delete(self, node_id: uuid.UUID, window_id: uuid.UUID):
        """Cancel a maintenance window (one in progress ends now)."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id, lock=True)
        maintenance.cancel(session, node=node, window_id=window_id, now=utcnow())
        session.commit()
