"""The platform's Flask application factory."""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

from flask import Flask

from app.config import Settings, get_settings
from app.web import install_request_parser

install_request_parser()


class PlatformFlask(Flask):
    """Flask, remembering which hooks and views are plain functions.

    Flask asks `inspect.iscoroutinefunction` of every hook and view it calls, on every request
    (nine times for GET /me); the answer for a function never changes.
    """

    _SYNC_CACHE_MAX = 10_000

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._plain: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # A bound method (a MethodView's, made per request) is asked about by its function.
        target = getattr(func, "__func__", func)
        if not isinstance(target, FunctionType):
            return super().ensure_sync(func)
        plain = self._plain.get(target)
        if plain is None:
            plain = super().ensure_sync(func) is func
            if len(self._plain) >= self._SYNC_CACHE_MAX:
                self._plain.clear()
            self._plain[target] = plain
        return func if plain else super().ensure_sync(func)


def create_app(settings: Settings | None = None, config: dict[str, Any] | None = None) -> Flask:
    settings = settings or get_settings()
    from app import db
    from app.auth.tokens import TokenVerifier
    from app.logging import configure_logging, redact_in_logs

    configure_logging(settings.log_level)
    redact_in_logs(settings.frps_plugin_secret, settings.frps_token)
    db.configure(settings.database_url)

    app = PlatformFlask(__name__)
    app.config.update(
        DC_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        API_TITLE="DistributedCompute",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_REDOC_PATH="/docs",
        OPENAPI_REDOC_URL="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
        OPENAPI_SWAGGER_UI_PATH="/swagger",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "info": {
                "description": "GPU rental marketplace: hosts list machines, renters rent "
                "them by the second. Money is a decimal string."
            },
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
        },
        # No ping_interval: app/ws/keepalive.py pings the agents' sockets from one loop.
        SOCK_SERVER_OPTIONS={"max_message_size": 64 * 1024},
        JSON_SORT_KEYS=False,
    )
    if config:
        app.config.update(config)

    app.extensions["dc_token_verifier"] = TokenVerifier(settings)

    from app import web
    from app.errors import register_error_handlers
    from app.extensions import api, sock

    web.init_app(app)
    from app.ops import requestlog

    requestlog.init_app(app)  # one JSON log line and HTTP metrics per request
    api.init_app(app)
    sock.init_app(app)
    register_error_handlers(app)  # after Api so our handlers win

    from app.blueprints import register_blueprints

    register_blueprints(app, api)
    # Every actor and periodic job, so the ops page and /metrics know them all.
    from app import actors  # noqa: F401
    from app.cli import register_cli

    register_cli(app)
    return app
