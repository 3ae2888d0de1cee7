from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from app.auth.current import BEARER_AUTH, login_required
from app.marketplace import service
from app.marketplace.schemas import OfferListSchema, OfferQueryArgsSchema
from app.redis_client import get_redis

blp = Blueprint("marketplace", __name__, url_prefix="/api/v1", description="Marketplace")


@blp.route("/offers")
class Offers(MethodView):
    decorators = [login_required]

    # An unknown parameter is a 422: a misspelt filter must not silently widen the search.
    @blp.arguments(OfferQueryArgsSchema(), location="query", unknown=RAISE)
    @blp.response(200, OfferListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """Search the nodes available to rent now."""
        settings = current_app.config["DC_SETTINGS"]
        page = service.search_offers_json(
            args=args, redis_client=get_redis(), ttl_seconds=settings.search_cache_ttl_seconds
        )
        # Serialized by the service (and cached as text); the schema above documents it.
        response = Response(page.body, status=200, mimetype="application/json")
        if page.store is not None:
            # Filling the cache need not delay this answer: it runs once the body is sent.
            response.call_on_close(page.store)
        return response
