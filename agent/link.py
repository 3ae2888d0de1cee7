"""The agent's side of the socket to the platform: sending frames, and the errors of a session."""

from __future__ import annotations

import threading
from typing import Any

import websocket

from agent.protocol import encode


class Unauthorized(Exception):
    """The platform refused the API key."""


class ConnectionLost(Exception):
    """The connection ended or the platform did not follow the protocol."""


class NotConnected(Exception):
    """No connection to send on; the platform resends unacknowledged commands after a reconnect."""


class Link:
    """The current connection, if any; every thread sends through it."""

    def __init__(self) -> None:
        self._ws: websocket.WebSocket | None = None
        self._guard = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def attach(self, ws: websocket.WebSocket) -> None:
        self._ws = ws

    def detach(self) -> websocket.WebSocket | None:
        with self._guard:
            ws, self._ws = self._ws, None
        return ws

    def send(self, event: str, data: dict[str, Any], id: str | None = None) -> None:
        """Send one frame; `data` is checked against the event's schema first."""
        self.send_raw(encode(event, data, id))

    def send_raw(self, frame: str) -> None:
        ws = self._ws
        if ws is None:
            raise NotConnected("not connected to the platform")
        try:
            ws.send(frame)
        except (websocket.WebSocketException, OSError) as exc:
            raise NotConnected(f"sending failed: {exc}") from None

    def ack(self, command_id: str | None) -> None:
        if command_id:
            self.send("ack", {"id": command_id})
