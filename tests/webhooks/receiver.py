"""A real HTTP receiver on 127.0.0.1 (http.server in a thread), and a signature verifier."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify_signature(secret: str, header: str, body: bytes, *, tolerance: float = 300) -> bool:
    """Check `DC-Signature: t=...,v1=...` as a receiver would: right secret, recent timestamp."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Received:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float
    status: int

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def signature(self) -> str:
        return self.headers["dc-signature"]


class Receiver:
    """Answers each POST with the next status of `statuses` (then 200); may stall the first."""

    def __init__(self, statuses: list[int] | None = None, stall_first: bool = False):
        self.statuses = list(statuses or [])
        self.stall_first = stall_first
        self.requests: list[Received] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/dc?src=test"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def answered(self, status: int = 200) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.status == status]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    index = len(receiver.requests)
                    status = receiver.statuses[index] if index < len(receiver.statuses) else 200
                    stall = receiver.stall_first and index == 0
                    received = Received(
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.time(),
                        0 if stall else status,
                    )
                    receiver.requests.append(received)
                if stall:
                    receiver.release.wait(120)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
