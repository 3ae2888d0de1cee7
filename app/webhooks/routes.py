from __future__ import annotations

import uuid

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app.auth.current import BEARER_AUTH, current_user, login_required
from app.pagination import PageArgsSchema
from app.web import db_session
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryListSchema,
    WebhookCreatedSchema,
    WebhookCreateSchema,
    WebhookListSchema,
)

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1", description="Webhooks")


@blp.route("/webhooks")
class Webhooks(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, WebhookListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my webhook subscriptions, newest first (secrets are not shown again)."""
        items, next_cursor = service.list_subscriptions(db_session(), user=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookCreatedSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, data):
        """Subscribe a URL to events; the signing secret is in this answer only."""
        session = db_session()
        subscription = service.create_subscription(
            session, user=current_user(), settings=current_app.config["DC_SETTINGS"], **data
        )
        session.commit()
        return subscription


@blp.route("/webhooks/<uuid:webhook_id>")
class WebhookById(MethodView):
    decorators = [login_required]

    @blp.response(204)
    @blp.doc(security=BEARER_AUTH)
    def delete(self, webhook_id: uuid.UUID):
        """Delete a subscription and its delivery log."""
        session = db_session()
        service.delete_subscription(session, user=current_user(), subscription_id=webhook_id)
        session.commit()


@blp.route("/webhooks/<uuid:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, DeliveryListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, webhook_id: uuid.UUID):
        """List a subscription's deliveries, newest first, with their attempts and answers."""
        items, next_cursor = service.list_deliveries(
            db_session(), user=current_user(), subscription_id=webhook_id, **args
        )
        return {"items": items, "next_cursor": next_cursor}
