"""A simulated host agent for tests: speaks the protocol over a real WebSocket.

Only the host side is simulated (no containers, no GPUs); the platform it talks to is the real
gunicorn + gevent server.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import websocket

SPECS = {
    "gpu_model": "RTX 4090",
    "gpu_count": 2,
    "gpu_vram_gb": 24,
    "cpu_cores": 16,
    "ram_gb": 62.8,
    "disk_gb": 931.5,
    "cuda_version": "12.4",
    "gpus": [
        {"index": 0, "uuid": "GPU-a", "name": "RTX 4090", "vram_mb": 24564},
        {"index": 1, "uuid": "GPU-b", "name": "RTX 4090", "vram_mb": 24564},
    ],
}
METRICS = {
    "cpu_temp": 55.0,
    "cpu_utilization": 12.5,
    "gpu_temp": [61.0, 63.0],
    "gpu_utilization": [90.0, 80.0],
    "gpu_memory_used_mb": [1000.0, 2000.0],
    "gpu_power_w": [300.0, 310.0],
    "ram_usage_mb": 4096.0,
    "disk_usage_gb": 120.0,
}


class SimAgent:
    def __init__(self, base_url: str, api_key: str, node_id: uuid.UUID | str):
        self.url = base_url.replace("http://", "ws://") + "/ws/agent"
        self.api_key = api_key
        self.node_id = str(node_id)
        self.ws: websocket.WebSocket | None = None
        self.welcome: dict[str, Any] | None = None
        self.received: list[dict[str, Any]] = []

    def connect(
        self,
        *,
        hello: bool = True,
        containers: list[dict[str, Any]] | None = None,
        specs: dict[str, Any] | None = None,
    ) -> SimAgent:
        self.ws = websocket.create_connection(
            self.url, header=[f"Authorization: Bearer {self.api_key}"], timeout=10
        )
        self.welcome = self.recv()
        assert self.welcome["event"] == "welcome", self.welcome
        if hello:
            self.hello(containers=containers, specs=specs)
        return self

    def send(self, event: str, data: dict[str, Any], id: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data, "v": 1}
        if id is not None:
            frame["id"] = id
        self.send_raw(json.dumps(frame))

    def send_raw(self, text: str) -> None:
        assert self.ws is not None
        self.ws.send(text)

    def hello(
        self, *, containers: list[dict[str, Any]] | None = None, specs: dict[str, Any] | None = None
    ) -> None:
        self.send(
            "hello",
            {"agent_version": "0.1.0-sim", "specs": specs or SPECS, "containers": containers or []},
        )

    def heartbeat(
        self,
        metrics: dict[str, Any] | None = None,
        *,
        node_id: str | None = None,
        status: str = "online",
    ) -> None:
        self.send(
            "heartbeat",
            {"node_id": node_id or self.node_id, "status": status, "metrics": metrics or METRICS},
        )

    def ack(self, command_id: str) -> None:
        self.send("ack", {"id": command_id})

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.ws is not None
        self.ws.settimeout(timeout)
        frame = json.loads(self.ws.recv())
        self.received.append(frame)
        return frame

    def recv_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame of `event`, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.05, deadline - time.monotonic()))
            if frame["event"] == event:
                return frame

    def frames_within(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives in the next `seconds`."""
        frames = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(self.recv(left))
            except websocket.WebSocketTimeoutException:
                break
        return frames

    def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Read until the server closes; return its close code and reason.

        Frames that arrive meanwhile are kept in `received`.
        """
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                opcode, payload = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                return None, ""
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                return code, payload[2:].decode(errors="replace")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.received.append(json.loads(payload))
        raise TimeoutError("the server did not close the connection")

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # already closed by the server
                self.ws.close()
            self.ws = None


def pending_besides_self_test(node_id: object) -> list:
    """The node's pending commands, less the self-test the platform asks a newly connected node
    for (tests of other behaviour drive scripted agents that never run it)."""
    from app.fleet import commands

    return [
        entry
        for entry in commands.pending_entries(str(node_id), count=5000)
        if json.loads(entry.frame).get("event") != "self_test"
    ]
