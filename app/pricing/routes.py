from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint

from app.auth.current import BEARER_AUTH, current_user, login_required
from app.fleet.service import get_owned_node
from app.pricing.schemas import PricingSuggestionSchema
from app.pricing.service import suggest_for_node
from app.web import db_session

blp = Blueprint("pricing", __name__, url_prefix="/api/v1", description="Pricing")


@blp.route("/nodes/<uuid:node_id>/pricing-suggestion")
class NodePricingSuggestion(MethodView):
    decorators = [login_required]

    @blp.response(200, PricingSuggestionSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, node_id: uuid.UUID):
        """Suggest an hourly rate for my node from the market (or the baseline)."""
        session = db_session()
        node = get_owned_node(session, owner=current_user(), node_id=node_id)
        return suggest_for_node(session, node=node).to_dict()
