"""The agent WebSocket endpoint /ws/agent (flask-sock). See app/ws/bridge.py for what happens to its frames.

The API key is checked in a ``before_request`` of this blueprint: flask-sock completes the
WebSocket handshake before the view runs, so this is the only place where a bad key can still
get a plain HTTP 401.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g
from sqlalchemy import select

from app.auth.current import bearer_token
from app.auth.node_keys import verify_node_key
from app.db import new_session
from app.errors import Unauthorized
from app.extensions import sock
from app.fleet.models import HostNode
from app.proxy.service import tunnel_settings
from app.ws.bridge import get_bridge

blp = Blueprint("agent_ws", __name__)


@blp.before_request
def authenticate_agent() -> None:
    # A short session of its own: the request-scoped one would stay checked out for as long as
    # the socket lives.
    with new_session() as session:
        found = verify_node_key(session, bearer_token())
        node_id, key_id = found if found is not None else (None, None)
        draining = None
        tunnel = None
        if node_id is not None:
            draining = session.execute(
                select(HostNode.draining).where(HostNode.id == node_id)
            ).scalar_one_or_none()
            # Sent in `welcome` so a restarted agent rebuilds the tunnels of running rentals.
            tunnel = tunnel_settings(
                session, node_id=node_id, settings=current_app.config["DC_SETTINGS"]
            )
    if node_id is None or draining is None:
        raise Unauthorized(
            "A valid node API key is required: 'Authorization: Bearer dcn_...'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    g.dc_agent = (str(node_id), bool(draining), tunnel, str(key_id))


@sock.route("/ws/agent", bp=blp)
def agent_socket(ws: Any) -> None:
    """Serve one agent's connection until it closes."""
    node_id, draining, tunnel, key_id = g.dc_agent
    get_bridge().serve(ws, node_id, draining=draining, tunnel=tunnel, key_id=key_id)


# Routes are declared when this module is first imported, inside the first create_app(); later
# apps get the blueprint from Sock.init_app, which registers `sock.bp` on every app it binds.
sock.bp = blp
if sock.app is not None and "agent_ws" not in sock.app.blueprints:
    sock.app.register_blueprint(blp)
