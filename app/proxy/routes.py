from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from app.errors import BadRequest, NotFound
from app.proxy import service
from app.web import db_session

blp = Blueprint("proxy", __name__, url_prefix="/api/v1", description="Proxy")

# Ops frps may be configured to send that carry no policy of ours: allowed as they are.
_PASS_THROUGH = {"Ping", "NewWorkConn", "NewUserConn"}


SECRET_HEADER = "X-Plugin-Secret"  # noqa: S105 (a header name)
_PLUGIN_DOC = {
    "responses": {
        200: {
            "description": "frps plugin answer: "
            '{"reject": false, "unchange": true} or '
            '{"reject": true, "reject_reason": "..."}'
        }
    }
}


@blp.route("/proxy/frps-plugin/<string:secret>")
class FrpsPlugin(MethodView):
    @blp.doc(**_PLUGIN_DOC)
    def post(self, secret: str):
        """Answer an frps server-plugin call (Login, NewProxy, CloseProxy).

        frps httpPlugins cannot send headers, so the secret is a path segment; every log line
        shows it as [redacted].
        """
        return _answer(secret)


@blp.route("/proxy/frps-plugin")
class FrpsPluginByHeader(MethodView):
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": SECRET_HEADER,
                "required": True,
                "schema": {"type": "string", "maxLength": 512},
                "description": "FRPS_PLUGIN_SECRET, for a proxy in front of the API that adds it",
            }
        ],
        **_PLUGIN_DOC,
    )
    def post(self):
        """Answer an frps server-plugin call, the secret in a header instead of the path."""
        return _answer(request.headers.get(SECRET_HEADER, ""))


def _answer(secret: str) -> Any:
    settings = current_app.config["DC_SETTINGS"]
    if not _same_secret(secret, settings.frps_plugin_secret):
        raise NotFound("Not found.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object {version, op, content}.")
    op = body.get("op") or request.args.get("op")
    content = body.get("content")
    if not isinstance(op, str):
        raise BadRequest("The plugin call names no op.")
    if not isinstance(content, dict):
        return jsonify(service.Verdict(False, "content must be a JSON object").body())
    session = db_session()
    verdict = _dispatch(session, op, content, settings.frps_plugin_secret)
    session.commit()
    return jsonify(verdict.body())


def _same_secret(given: str, expected: str) -> bool:
    # Digests first, so the comparison takes the same time whatever the given length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def _dispatch(session: Any, op: str, content: dict[str, Any], secret: str) -> service.Verdict:
    if op == "Login":
        return service.login(session, content=content, secret=secret)
    if op == "NewProxy":
        return service.new_proxy(session, content=content, secret=secret)
    if op == "CloseProxy":
        return service.close_proxy(session, content=content, secret=secret)
    if op in _PASS_THROUGH:
        return service.Verdict(True)
    raise BadRequest(f"Unknown plugin op {op[:40]!r}.")
