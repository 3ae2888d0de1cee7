"""A fake frpc for the tests: no frp binary can be installed here.

It takes `-c <config>` like frpc, parses the TOML, serves frpc's admin API (`GET /api/reload`
behind the `webServer` user and password) and appends what it did to `fake-frpc-events.jsonl`
beside the config, so the tests can see starts and reloads. It opens no tunnel.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    config_path = Path(sys.argv[sys.argv.index("-c") + 1])
    events = config_path.parent / "fake-frpc-events.jsonl"

    def load() -> dict:
        return tomllib.loads(config_path.read_text())

    def record(event: str, config: dict) -> None:
        with events.open("a") as handle:
            handle.write(
                json.dumps(
                    {
                        "event": event,
                        "pid": os.getpid(),
                        "proxies": [p["name"] for p in config.get("proxies", [])],
                    }
                )
                + "\n"
            )

    config = load()
    web = config["webServer"]
    expected = "Basic " + base64.b64encode(f"{web['user']}:{web['password']}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            if self.path != "/api/reload":
                self.send_response(404)
                self.end_headers()
                return
            record("reload", load())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((web["addr"], int(web["port"])), Handler)
    record("start", config)
    server.serve_forever()


if __name__ == "__main__":
    main()
