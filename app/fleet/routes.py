from __future__ import annotations

import logging
import uuid

import redis
from flask.views import MethodView
from flask_smorest import Blueprint

from app.auth.current import BEARER_AUTH, current_user, is_admin, login_required
from app.errors import ServiceUnavailable
from app.fleet import service
from app.fleet.commands import disconnect_node, reconnect_node, send_to_node, withdraw_drain
from app.fleet.metrics import query_series, reader
from app.fleet.models import HostNode
from app.fleet.schemas import (
    ApiKeySchema,
    NodeCreatedSchema,
    NodeCreateSchema,
    NodeListSchema,
    NodeMetricsArgsSchema,
    NodeMetricsSchema,
    NodeSchema,
    NodeUpdateSchema,
)
from app.influx import InfluxError
from app.marketplace.reliability import reliability_inputs
from app.pagination import PageArgsSchema
from app.web import db_session

log = logging.getLogger(__name__)
blp = Blueprint("fleet", __name__, url_prefix="/api/v1", description="Host nodes")


@blp.route("/nodes")
class Nodes(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, NodeListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my nodes."""
        items, next_cursor = service.list_nodes(db_session(), owner=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(NodeCreateSchema)
    @blp.response(201, NodeCreatedSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, data):
        """Register a host node; the API key in the answer is shown only once."""
        session = db_session()
        node, key = service.register_node(session, owner=current_user(), **data)
        session.commit()
        return {"node": node, "api_key": key.key}


@blp.route("/nodes/<uuid:node_id>")
class NodeById(MethodView):
    decorators = [login_required]

    @blp.response(200, NodeSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, node_id: uuid.UUID):
        """Show one of my nodes, with its reliability score and the score's inputs."""
        session = db_session()
        node = service.get_owned_node(session, owner=current_user(), node_id=node_id)
        view = {column.key: getattr(node, column.key) for column in HostNode.__table__.columns}
        view["reliability"] = reliability_inputs(session, node_id=node.id)
        return view

    @blp.arguments(NodeUpdateSchema)
    @blp.response(200, NodeSchema)
    @blp.doc(security=BEARER_AUTH)
    def patch(self, data, node_id: uuid.UUID):
        """Change a node's name, pricing, location, or maintenance status."""
        session = db_session()
        node = service.update_node(session, owner=current_user(), node_id=node_id, changes=data)
        session.commit()
        return node


@blp.route("/nodes/<uuid:node_id>/api-key")
class NodeApiKey(MethodView):
    decorators = [login_required]

    @blp.response(201, ApiKeySchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, node_id: uuid.UUID):
        """Rotate the node's API key: the old key stops working at once."""
        session = db_session()
        key = service.rotate_key(session, owner=current_user(), node_id=node_id)
        session.commit()
        _disconnect_agent(node_id)
        return {
            "api_key": key.key,
            "prefix": key.record.prefix,
            "created_at": key.record.created_at,
        }


def _disconnect_agent(node_id: uuid.UUID) -> None:
    """Close the agent's socket that authenticated with the old key (it reconnects with the new)."""
    try:
        disconnect_node(node_id)
    except redis.RedisError:
        log.warning(
            "could not close the agent connection after key rotation",
            extra={"node_id": str(node_id)},
        )


@blp.route("/nodes/<uuid:node_id>/drain")
class NodeDrain(MethodView):
    decorators = [login_required]

    @blp.response(202, NodeSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, node_id: uuid.UUID):
        """Drain the node: no new rentals; its agent is told to wind down."""
        session = db_session()
        node = service.drain_node(session, owner=current_user(), node_id=node_id)
        session.commit()
        try:
            send_to_node(node.id, "drain_node", {"node_id": str(node.id)})
        except redis.RedisError:
            # The node is hidden from offers already; asking again sends the command again.
            raise ServiceUnavailable(
                "The node is draining, but its agent could not be told yet; try again.",
                headers={"Retry-After": "5"},
            ) from None
        return node


@blp.route("/nodes/<uuid:node_id>/undrain")
class NodeUndrain(MethodView):
    decorators = [login_required]

    @blp.response(202, NodeSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, node_id: uuid.UUID):
        """Undrain the node: it is offered again; its agent takes new rentals again."""
        session = db_session()
        node = service.undrain_node(session, owner=current_user(), node_id=node_id)
        session.commit()
        try:
            # The protocol has no "undrain" command: the agent reconnects, and the `welcome` of
            # its new connection says `draining: false` (every agent version understands that).
            withdraw_drain(node.id)
            reconnect_node(node.id)
        except redis.RedisError:
            raise ServiceUnavailable(
                "The node is offered again, but its agent could not be told yet; try again.",
                headers={"Retry-After": "5"},
            ) from None
        return node


@blp.route("/nodes/<uuid:node_id>/metrics")
class NodeMetrics(MethodView):
    decorators = [login_required]

    @blp.arguments(NodeMetricsArgsSchema, location="query")
    @blp.response(200, NodeMetricsSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, node_id: uuid.UUID):
        """Show the node's heartbeat metrics, averaged per time bucket."""
        user = current_user()
        node = service.node_for_metrics(
            db_session(), user=user, admin=is_admin(user), node_id=node_id
        )
        try:
            series = query_series(
                reader(),
                node_id=str(node.id),
                since_seconds=args["since_seconds"],
                every_seconds=args["every_seconds"],
            )
        except InfluxError:
            raise ServiceUnavailable(
                "The metrics store is unavailable; try again.", headers={"Retry-After": "10"}
            ) from None
        return {"node_id": node.id, "since": args["since"], "every": args["every"], **series}
