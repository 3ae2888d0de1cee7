"""Operator pages: /ops/queues (HTML and JSON), dead-letter and payout actions, and /metrics.

Registered on the Flask app directly (not through the Api), so none of this is in the OpenAPI
document. Admins reach the page with Clerk's `__session` cookie, as browsers carry it, or with
the Authorization header; anyone else gets the same 404 as for any object they may not see.
Forms authenticated by the cookie must also carry the double-submit CSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from app.auth.current import authenticate, bearer_token, is_admin
from app.auth.models import User
from app.billing.payouts import approve_payout, reject_payout, requested_payouts
from app.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from app.ops import metrics
from app.ops.queues import QueueInspector, platform_queues
from app.ops.service import act_on_dead_letters, snapshot
from app.redis_client import get_redis
from app.validation import has_control_characters
from app.web import db_session

blp = Blueprint(
    "ops", __name__, url_prefix="", description="Operations", template_folder="templates"
)

SESSION_COOKIE = "__session"  # where Clerk keeps the session token in browsers
CSRF_COOKIE = "dc_ops_csrf"
CSRF_FIELD = "csrf_token"
REFRESH_SECONDS = 5
_REDIS_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NOTICES = {"requeue": "Requeued", "discard": "Discarded"}


def ops_admin() -> tuple[User, bool]:
    """The admin calling, and whether they came with the cookie; 404 for anyone else."""
    token = bearer_token()
    via_cookie = False
    if token is None:
        token = request.cookies.get(SESSION_COOKIE) or None
        via_cookie = token is not None
    try:
        user = authenticate(token)
    except Unauthorized:
        raise NotFound("Not found.") from None
    if not is_admin(user):
        raise NotFound("Not found.")
    g.dc_user = user
    return user, via_cookie


def _settings() -> Any:
    return current_app.config["DC_SETTINGS"]


def _inspector() -> QueueInspector:
    return QueueInspector(get_redis(), known_queues=platform_queues())


def _secure_headers(response: Response, nonce: str | None = None) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if nonce:
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    return response


@blp.route("/ops/queues", methods=["GET"])
def queues_page() -> Response:
    """Show the queue dashboard."""
    ops_admin()
    data = snapshot(db_session(), get_redis(), _settings())
    token = request.cookies.get(CSRF_COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_\-]{32,64}", token):
        token = secrets.token_urlsafe(32)
    notice = None
    done, count = request.args.get("done"), request.args.get("count", "")
    queue = request.args.get("queue", "")
    if done in _NOTICES and count.isdigit() and re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", queue):
        notice = f"{_NOTICES[done]} {count} dead letter{'s' if count != '1' else ''} of {queue}."
    nonce = secrets.token_urlsafe(16)
    html = render_template(
        "ops/queues.html",
        data=data,
        csrf_token=token,
        nonce=nonce,
        notice=notice,
        refresh_seconds=REFRESH_SECONDS,
        age=format_age,
        payouts=requested_payouts(db_session()),
    )
    response = _secure_headers(Response(html, mimetype="text/html"), nonce)
    response.set_cookie(
        CSRF_COOKIE, token, path="/ops", httponly=True, samesite="Strict", secure=request.is_secure
    )
    return response


@blp.route("/ops/queues.json", methods=["GET"])
def queues_json() -> Response:
    """Return the queue dashboard's data (the page refreshes itself from it)."""
    ops_admin()
    return _secure_headers(jsonify(snapshot(db_session(), get_redis(), _settings())))


@blp.route(
    "/ops/queues/<queue>/dead-letters/<message_id>/<any(requeue, discard):action>", methods=["POST"]
)
def dead_letter_action(queue: str, message_id: str, action: str) -> ResponseReturnValue:
    """Requeue or discard one dead letter."""
    return _act(queue, action, message_id)


@blp.route("/ops/queues/<queue>/dead-letters/<any(requeue, discard):action>", methods=["POST"])
def dead_letters_action(queue: str, action: str) -> ResponseReturnValue:
    """Requeue or discard every dead letter of a queue."""
    return _act(queue, action, None)


def _act(queue: str, action: str, message_id: str | None) -> ResponseReturnValue:
    admin, via_cookie = ops_admin()
    if via_cookie:
        _check_csrf()
    inspector = _inspector()
    if queue not in inspector.queue_names():
        raise NotFound("No such queue.")
    if message_id is not None and not _REDIS_ID.match(message_id):
        raise NotFound("No such dead letter.")
    session = db_session()
    count = act_on_dead_letters(
        session, inspector, admin=admin, action=action, queue=queue, message_id=message_id
    )
    session.commit()
    if _wants_json():
        return jsonify({"action": action, "queue": queue, "message_id": message_id, "count": count})
    return redirect(url_for("ops.queues_page", done=action, count=count, queue=queue), code=303)


@blp.route("/ops/payouts/<uuid:payout_id>/<any(approve, reject):action>", methods=["POST"])
def payout_action(payout_id: uuid.UUID, action: str) -> ResponseReturnValue:
    """Approve or reject a requested payout (a rejection needs a reason)."""
    admin, via_cookie = ops_admin()
    if via_cookie:
        _check_csrf()
    session = db_session()
    if action == "approve":
        payout = approve_payout(session, payout_id=payout_id, admin=admin)
    else:
        body = request.get_json(silent=True) if request.is_json else None
        raw = request.form.get("reason") or (body or {}).get("reason") or ""
        reason = raw.strip() if isinstance(raw, str) else ""
        if not reason or len(reason) > 500 or has_control_characters(reason):
            raise ValidationFailed(
                "A rejection needs a reason (1-500 characters, one line).",
                errors={"reason": ["1-500 characters without control characters."]},
            )
        payout = reject_payout(session, payout_id=payout_id, admin=admin, reason=reason)
    session.commit()
    if _wants_json():
        return jsonify({"id": str(payout.id), "status": payout.status, "action": action})
    return redirect(url_for("ops.queues_page"), code=303)


def _wants_json() -> bool:
    accept = request.accept_mimetypes
    return accept.best_match(["text/html", "application/json"]) == "application/json"


def _check_csrf() -> None:
    """Cookie-authenticated posts: same origin, and the form token equals the cookie token."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        expected = urlsplit(request.host_url)
        got = urlsplit(origin)
        if (got.scheme, got.netloc) != (expected.scheme, expected.netloc):
            raise Forbidden("Cross-origin form posts are refused.")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise Forbidden("The form's CSRF token is missing or stale; reload the page.")


@blp.route("/metrics", methods=["GET"])
def metrics_view() -> Response:
    """Serve Prometheus metrics."""
    expected = _settings().metrics_token
    if expected:
        given = bearer_token()
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized(
                "Send 'Authorization: Bearer <METRICS_TOKEN>'.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    elif not _is_loopback(request.remote_addr):
        # Without a token (development only: production requires METRICS_TOKEN) keep it local.
        raise NotFound("Not found.")
    body, content_type = metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def format_age(seconds: float | None) -> str:
    """'42 s', '3 min', '2 h 5 min', '3 d 4 h' (the page's JavaScript formats the same way)."""
    if seconds is None:
        return "never"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
