from __future__ import annotations

import uuid

from flask import current_app, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from app.auth import api_keys, ssh_keys
from app.auth.current import (
    BEARER_AUTH,
    current_account,
    current_user,
    is_admin,
    login_required,
    session_or_full_key_required,
)
from app.auth.schemas import (
    HealthSchema,
    MeSchema,
    SshKeyCreateSchema,
    SshKeyListSchema,
    SshKeySchema,
    UserApiKeyCreatedSchema,
    UserApiKeyCreateSchema,
    UserApiKeyListSchema,
    me_body,
)
from app.billing.accrued import balance_of
from app.influx import InfluxClient
from app.money import to_wire
from app.pagination import PageArgsSchema
from app.redis_client import get_redis
from app.web import db_session

blp = Blueprint(
    "auth", __name__, url_prefix="/api/v1", description="Identity, API keys, SSH keys and health"
)


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is down")
    def get(self):
        """Check the database, Redis and InfluxDB."""
        settings = current_app.config["DC_SETTINGS"]
        checks: dict[str, str] = {}
        try:
            db_session().execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc.__class__.__name__}"
        try:
            get_redis(settings.redis_url).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc.__class__.__name__}"
        try:
            InfluxClient.from_settings(settings).ping()
            checks["influxdb"] = "ok"
        except Exception as exc:
            checks["influxdb"] = f"error: {exc}"
        failing = [name for name, value in checks.items() if value != "ok"]
        if failing:
            return {"status": "unavailable", "failing": failing, "checks": checks}, 503
        return {"status": "ok", "checks": checks}


@blp.route("/me")
class Me(MethodView):
    @login_required
    @blp.response(200, MeSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self):
        """Show the calling user."""
        user = current_account()
        body = me_body(user, is_admin=is_admin(user))  # MeSchema's output
        # The balance as every reader sees it: posted, less what active rentals have accrued
        # (without one, the posted balance is that already).
        if user.renting:
            body["balance"] = to_wire(balance_of(db_session(), user.id))
        return jsonify(body)


@blp.route("/api-keys")
class ApiKeys(MethodView):
    decorators = [session_or_full_key_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, UserApiKeyListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my live API keys (never their secrets)."""
        items, next_cursor = api_keys.list_api_keys(db_session(), user=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(UserApiKeyCreateSchema)
    @blp.response(201, UserApiKeyCreatedSchema)
    @blp.doc(security=BEARER_AUTH)
    def post(self, data):
        """Create an API key for programs; the key in the answer is shown only once."""
        session = db_session()
        new = api_keys.create_api_key(
            session,
            user=current_user(),
            name=data["name"],
            scope=data["scope"],
            max_live=current_app.config["DC_SETTINGS"].api_keys_per_user,
        )
        session.commit()
        return {"api_key": new.key, "key": new.record}


@blp.route("/api-keys/<uuid:key_id>")
class ApiKeyById(MethodView):
    decorators = [session_or_full_key_required]

    @blp.response(204)
    @blp.doc(security=BEARER_AUTH)
    def delete(self, key_id: uuid.UUID):
        """Revoke an API key: it stops working at once."""
        session = db_session()
        api_keys.revoke_api_key(
            session,
            user=current_user(),
            key_id=key_id,
            redis_client=get_redis(current_app.config["DC_SETTINGS"].redis_url),
        )
        session.commit()


@blp.route("/me/ssh-keys")
class SshKeys(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, SshKeyListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my account's SSH public keys."""
        items, next_cursor = ssh_keys.list_ssh_keys(db_session(), user=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(SshKeyCreateSchema)
    @blp.response(201, SshKeySchema)
    @blp.alt_response(409, description="The key is already on the account, or the cap is reached")
    @blp.doc(security=BEARER_AUTH)
    def post(self, data):
        """Add an SSH public key; it goes into every rental I start."""
        session = db_session()
        record = ssh_keys.add_ssh_key(
            session,
            user=current_user(),
            public_key=data["public_key"],
            name=data.get("name"),
            max_keys=current_app.config["DC_SETTINGS"].ssh_keys_per_user,
        )
        session.commit()
        return record


@blp.route("/me/ssh-keys/<uuid:key_id>")
class SshKeyById(MethodView):
    decorators = [login_required]

    @blp.response(204)
    @blp.doc(security=BEARER_AUTH)
    def delete(self, key_id: uuid.UUID):
        """Remove an SSH public key from my account (running rentals keep theirs)."""
        session = db_session()
        ssh_keys.delete_ssh_key(session, user=current_user(), key_id=key_id)
        session.commit()
