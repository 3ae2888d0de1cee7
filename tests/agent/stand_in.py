"""A small real WebSocket server that speaks the platform's side of /ws/agent.

It lets the agent tests send exactly the frames they need (bad ones included) and see every frame
the agent sends back. It is a real peer over real sockets, not a replacement for the platform's
endpoint: the end-to-end tests in test_agent_platform.py use the real platform process.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from typing import Any

from flask import Flask, abort, request
from flask_sock import Sock
from werkzeug.serving import make_server


class PlatformStandIn:
    def __init__(
        self,
        *,
        api_key: str,
        node_id: str,
        tunnel: dict[str, Any] | None = None,
        draining: bool = False,
        features: tuple[str, ...] = ("instance_progress", "logs"),
    ):
        self.api_key = api_key
        self.node_id = node_id
        self.tunnel = tunnel
        self.draining = draining
        self.features = features
        self.received: list[dict[str, Any]] = []
        self.sizes: list[int] = []
        self.connections = 0
        self.refused = 0
        self._cond = threading.Condition()
        self._ws: Any = None
        self.app = Flask("platform-stand-in")
        self.app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 5}
        sock = Sock(self.app)

        @self.app.before_request
        def _check_key() -> None:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                with self._cond:
                    self.refused += 1
                    self._cond.notify_all()
                abort(401)

        @sock.route("/ws/agent")
        def _agent(ws: Any) -> None:
            welcome: dict[str, Any] = {
                "node_id": self.node_id,
                "draining": self.draining,
                "features": list(self.features),
            }
            if self.tunnel is not None:
                welcome["tunnel"] = self.tunnel
            ws.send(json.dumps({"event": "welcome", "data": welcome, "v": 1}))
            with self._cond:
                self._ws = ws
                self.connections += 1
                self._cond.notify_all()
            while True:
                try:
                    text = ws.receive()
                except Exception:
                    return
                if text is None:
                    continue
                with self._cond:
                    self.received.append(json.loads(text))
                    self.sizes.append(len(text.encode()))  # as sent, to check the frame limit
                    self._cond.notify_all()

        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PlatformStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop()
        self._server.shutdown()

    def drop(self) -> None:
        """Close the agent's connection from the platform's side."""
        with self._cond:
            ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):  # already closed by the agent
                ws.close()

    # ------------------------------------------------------------ talking to the agent
    def wait_connected(self, count: int = 1, timeout: float = 20.0) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self.connections >= count and self._ws is not None, timeout
            ):
                raise TimeoutError(f"the agent did not connect (connections={self.connections})")

    def send_raw(self, text: str) -> None:
        with self._cond:
            ws = self._ws
        assert ws is not None, "no agent connected"
        ws.send(text)

    def send(self, event: str, data: dict[str, Any], command_id: str | None = None) -> str:
        command_id = command_id or str(uuid.uuid4())
        self.send_raw(json.dumps({"event": event, "data": data, "id": command_id, "v": 1}))
        return command_id

    def frames(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [f for f in self.received if event is None or f["event"] == event]

    def wait_for(
        self, event: str, timeout: float = 20.0, after: int = 0, **match: Any
    ) -> dict[str, Any]:
        """The first `event` frame (from index `after`) whose data has the `match` items."""
        deadline = time.monotonic() + timeout

        def found() -> dict[str, Any] | None:
            for frame in self.received[after:]:
                data = frame.get("data") or {}
                if frame["event"] == event and all(data.get(k) == v for k, v in match.items()):
                    return frame
            return None

        with self._cond:
            while True:
                frame = found()
                if frame is not None:
                    return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [
                        (f["event"], f.get("data"))
                        for f in self.received
                        if f["event"] != "heartbeat"
                    ]
                    raise TimeoutError(f"no {event} {match} from the agent; got {seen}")
                self._cond.wait(left)

    def sized(self, event: str, after: int = 0) -> list[tuple[dict[str, Any], int]]:
        """(frame, its size in bytes as sent) of each `event` frame from index `after`."""
        with self._cond:
            pairs = list(zip(self.received, self.sizes, strict=True))[after:]
        return [(frame, size) for frame, size in pairs if frame["event"] == event]

    def mark(self) -> int:
        with self._cond:
            return len(self.received)
