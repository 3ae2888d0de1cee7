"""Every domain's blueprint and the agent socket, registered in one place."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from app.auth.routes import blp as auth_blp
from app.billing.routes import blp as billing_blp
from app.fleet.host_routes import blp as hosts_blp
from app.fleet.routes import blp as fleet_blp
from app.marketplace.routes import blp as marketplace_blp
from app.ops.routes import blp as ops_blp
from app.pricing.routes import blp as pricing_blp
from app.proxy.routes import blp as proxy_blp
from app.rentals.routes import blp as rentals_blp
from app.webhooks.routes import blp as webhooks_blp
from app.ws import routes as ws_routes


def register_blueprints(app: Flask, api: Api) -> None:
    for blp in (
        auth_blp,
        fleet_blp,
        hosts_blp,
        marketplace_blp,
        rentals_blp,
        billing_blp,
        proxy_blp,
        pricing_blp,
        webhooks_blp,
    ):
        api.register_blueprint(blp)

    # Not part of the public REST API (no OpenAPI entries): the agent socket and the ops pages.
    # /ws/agent is declared on `sock` when app/ws/routes.py is imported (above).
    assert ws_routes.blp.name == "agent_ws"

    app.register_blueprint(ops_blp)
