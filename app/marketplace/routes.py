from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from app.auth.current import BEARER_AUTH, login_required
from app.marketplace import service
from app.marketplace.cache import raw_hit
from app.marketplace.schemas import OfferListSchema, OfferQueryArgsSchema
from app.redis_client import get_redis

blp = Blueprint("marketplace", __name__, url_prefix="/api/v1", description="Marketplace")


def _json(body: str) -> Response:
    return Response(body, status=200, mimetype="application/json")


def answered_before(view: Callable[..., Any]) -> Callable[..., Any]:
    """Answer a query string served before (and still current) from the cache, before its
    arguments are validated again: see cache.raw_hit. Outermost of the view's decorators, so
    flask-smorest still documents the arguments and validates every other request."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        body = raw_hit(get_redis(), request.query_string)
        return _json(body) if body is not None else view(*args, **kwargs)

    return wrapper


@blp.route("/offers")
class Offers(MethodView):
    decorators = [login_required]

    @answered_before
    # An unknown parameter is a 422: a misspelt filter must not silently widen the search.
    @blp.arguments(OfferQueryArgsSchema(), location="query", unknown=RAISE)
    @blp.response(200, OfferListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """Search the nodes available to rent now."""
        settings = current_app.config["DC_SETTINGS"]
        page = service.search_offers_json(
            args=args,
            redis_client=get_redis(),
            ttl_seconds=settings.search_cache_ttl_seconds,
            query_string=request.query_string,
        )
        # Serialized by the service (and cached as text); the schema above documents it.
        response = _json(page.body)
        if page.store is not None:
            # Filling the cache need not delay this answer: it runs once the body is sent.
            response.call_on_close(page.store)
        return response
