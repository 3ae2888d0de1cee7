"""The agent WebSocket endpoint /ws/agent (flask-sock). See app/ws/bridge.py for what happens to its frames.

The API key is checked in a ``before_request`` of this blueprint: flask-sock completes the
WebSocket handshake before the view runs, so this is the only place where a bad key can still
get a plain HTTP 401.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g
from sqlalchemy.orm import Session

from app.auth.current import bearer_token
from app.auth.node_keys import verify_node_key
from app.auth.reads import read_pool
from app.errors import Unauthorized
from app.extensions import sock
from app.proxy.service import tunnel_settings
from app.ws.bridge import get_bridge

blp = Blueprint("agent_ws", __name__)


@blp.before_request
def authenticate_agent() -> None:
    # On the read pool (app/auth/reads.py), not the request-scoped session: that one would stay
    # checked out for as long as the socket lives, and a reconnect storm pays each handshake's
    # pre-ping, BEGIN and ROLLBACK on top of its two SELECTs.
    settings = current_app.config["DC_SETTINGS"]
    found = read_pool().run(lambda session: _agent_of(session, bearer_token(), settings))
    if found is None:
        raise Unauthorized(
            "A valid node API key is required: 'Authorization: Bearer dcn_...'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    g.dc_agent = found


def _agent_of(
    session: Session, key: str | None, settings: Any
) -> tuple[str, bool, dict[str, Any], str] | None:
    """(node id, draining, tunnel block, key id) for a valid node key, else None."""
    found = verify_node_key(session, key)
    if found is None:
        return None
    # Sent in `welcome` so a restarted agent rebuilds the tunnels of running rentals.
    tunnel = tunnel_settings(session, node_id=found.node_id, settings=settings)
    return str(found.node_id), found.draining, tunnel, str(found.key_id)


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
