from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from app.auth.current import current_user, is_admin, login_required
from app.auth.schemas import HealthSchema, MeSchema
from app.influx import InfluxClient
from app.redis_client import get_redis
from app.web import db_session

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Identity and health")


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
    @blp.doc(security=[{"bearerAuth": []}])
    def get(self):
        """Show the calling user."""
        user = current_user()
        return {
            "id": user.id,
            "clerk_id": user.clerk_id,
            "email": user.email,
            "role": user.role,
            "balance": user.balance,
            "is_admin": is_admin(user),
            "created_at": user.created_at,
        }
