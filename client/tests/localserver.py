"""A real HTTP server on 127.0.0.1 that answers what each test scripts, and records requests.

The client's own tests need nothing of the platform: only this package, pytest and the
standard library's http.server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


Responder = Callable[[Seen], Reply]


class ScriptedServer:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: dict[tuple[str, str], list[Reply] | Responder] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                outer.seen.append(seen)
                reply = outer.reply_for(seen)
                if reply.delay:
                    threading.Event().wait(reply.delay)
                payload = (
                    reply.raw
                    if reply.raw is not None
                    else (b"" if reply.body is None else json.dumps(reply.body).encode())
                )
                self.send_response(reply.status)
                content_type = "text/html" if reply.raw is not None else "application/json"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def on(self, method: str, path: str, *replies: Reply | Responder) -> None:
        """Answer METHOD /api/v1PATH with these replies in turn (the last one repeats), or with
        what one responder function returns."""
        if len(replies) == 1 and callable(replies[0]):
            self.routes[(method, "/api/v1" + path)] = replies[0]
        else:
            self.routes[(method, "/api/v1" + path)] = [r for r in replies if isinstance(r, Reply)]

    def reply_for(self, seen: Seen) -> Reply:
        route = self.routes.get((seen.method, seen.path))
        if route is None:
            return Reply(404, {"code": 404, "status": "Not Found", "message": "Not Found"})
        if callable(route):
            return route(seen)
        return route.pop(0) if len(route) > 1 else route[0]

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == "/api/v1" + path]


RENTAL = {
    "id": "6a0b1f84-5f1e-4b7b-9c55-2d1f3f1f0a01",
    "node_id": "0c7f1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
    "image": "busybox",
    "status": "pending",
    "cost_per_hour": "0.6000",
    "cost_so_far": None,
    "connection_info": None,
    "created_at": "2026-11-27T10:00:00Z",
}
