from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint

from app.auth.current import current_user, login_required
from app.fleet import service
from app.fleet.schemas import (
    ApiKeySchema,
    NodeCreatedSchema,
    NodeCreateSchema,
    NodeListSchema,
    NodeSchema,
    NodeUpdateSchema,
)
from app.pagination import PageArgsSchema
from app.web import db_session

blp = Blueprint("fleet", __name__, url_prefix="/api/v1", description="Host nodes")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


@blp.route("/nodes")
class Nodes(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, NodeListSchema)
    @blp.doc(security=SECURITY)
    def get(self, args):
        """List my nodes."""
        items, next_cursor = service.list_nodes(db_session(), owner=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(NodeCreateSchema)
    @blp.response(201, NodeCreatedSchema)
    @blp.doc(security=SECURITY)
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
    @blp.doc(security=SECURITY)
    def get(self, node_id: uuid.UUID):
        """Show one of my nodes."""
        return service.get_owned_node(db_session(), owner=current_user(), node_id=node_id)

    @blp.arguments(NodeUpdateSchema)
    @blp.response(200, NodeSchema)
    @blp.doc(security=SECURITY)
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
    @blp.doc(security=SECURITY)
    def post(self, node_id: uuid.UUID):
        """Rotate the node's API key: the old key stops working at once."""
        session = db_session()
        key = service.rotate_key(session, owner=current_user(), node_id=node_id)
        session.commit()
        return {"api_key": key.key, "prefix": key.record.prefix,
                "created_at": key.record.created_at}
