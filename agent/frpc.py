"""frpc: the tunnel that makes rental ports public through the platform's frps.

The agent writes frpc's TOML config (frp v0.52+ format) from the platform's tunnel settings and the
running containers, starts frpc, restarts it when it dies, and applies changes at run time through
frpc's admin API (``GET /api/reload``). Without an frpc binary it says so once and the containers
keep their local ports only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("agent.frpc")

CONFIG_NAME = "frpc.toml"


@dataclass(frozen=True, order=True)
class Proxy:
    rental_id: str
    container_port: int
    local_port: int
    remote_port: int

    @property
    def name(self) -> str:
        return f"rental-{self.rental_id}-{self.container_port}"


def _string(value: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML, except that DEL must be escaped too)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_config(
    *,
    tunnel: dict[str, Any],
    proxies: list[Proxy],
    local_ip: str,
    admin_port: int,
    admin_user: str,
    admin_password: str,
) -> str:
    """frpc's config for the platform's tunnel settings and one TCP proxy per rental port."""
    lines = [
        "# Written by dc-agent; changes are overwritten.",
        f"serverAddr = {_string(tunnel['server_addr'])}",
        f"serverPort = {int(tunnel['server_port'])}",
        f"user = {_string(tunnel['user'])}",
        # Keep retrying when frps is down or refuses the login instead of exiting.
        "loginFailExit = false",
        'auth.method = "token"',
        f"auth.token = {_string(tunnel.get('token') or '')}",
        'webServer.addr = "127.0.0.1"',
        f"webServer.port = {int(admin_port)}",
        f"webServer.user = {_string(admin_user)}",
        f"webServer.password = {_string(admin_password)}",
    ]
    for key, value in sorted((tunnel.get("metadatas") or {}).items()):
        lines.append(f"metadatas.{_string(str(key))} = {_string(str(value))}")
    for proxy in sorted(proxies):
        lines += [
            "",
            "[[proxies]]",
            f"name = {_string(proxy.name)}",
            'type = "tcp"',
            f"localIP = {_string(local_ip)}",
            f"localPort = {int(proxy.local_port)}",
            f"remotePort = {int(proxy.remote_port)}",
            f"metadatas.rental_id = {_string(proxy.rental_id)}",
            f"metadatas.container_port = {_string(str(proxy.container_port))}",
        ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Frpc:
    """Keeps one frpc process in line with the wanted proxies."""

    RESTART_DELAY_MAX = 60.0

    def __init__(self, binary: str | None, data_dir: Path, *, local_ip: str):
        self.binary = binary
        self.config_path = Path(data_dir) / CONFIG_NAME
        self.log_path = Path(data_dir) / "frpc.log"
        # frpc connects to the published ports; a wildcard publish address is reached on loopback.
        self.local_ip = "127.0.0.1" if local_ip in ("0.0.0.0", "::") else local_ip
        self.admin_port = _free_port()
        self.admin_user = "dc-agent"
        self.admin_password = secrets.token_urlsafe(18)
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._rendered: str | None = None
        self._said_missing = False
        self._stopping = threading.Event()
        self._failures = 0
        self._next_start = 0.0
        self._started_at = 0.0
        self._supervisor: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def update(self, tunnel: dict[str, Any] | None, proxies: list[Proxy]) -> None:
        """Write the config for these proxies and make frpc use it."""
        with self._lock:
            if tunnel is None:
                if proxies:
                    log.warning(
                        "no tunnel settings from the platform yet: %d port(s) stay local",
                        len(proxies),
                    )
                return
            text = render_config(
                tunnel=tunnel,
                proxies=proxies,
                local_ip=self.local_ip,
                admin_port=self.admin_port,
                admin_user=self.admin_user,
                admin_password=self.admin_password,
            )
            if text == self._rendered and (self.running or not proxies):
                return
            self._write(text)
            self._rendered = text
            if self.binary is None:
                if not self._said_missing:
                    log.warning(
                        "frpc not found (set DC_FRPC_BIN or --frpc-bin): rental ports stay "
                        "local to this machine; the config is at %s",
                        self.config_path,
                    )
                    self._said_missing = True
                return
            if not self.running:
                if proxies:
                    self._start()
                return
            if not self._reload():
                log.warning("frpc did not take the new config; restarting it")
                self._terminate()
                self._start()

    def _write(self, text: str) -> None:
        # The file holds the frps token: readable by the agent's user only.
        tmp = self.config_path.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.config_path)

    def _start(self) -> None:
        assert self.binary is not None
        log.info("starting frpc (%s)", self.binary)
        self._started_at = time.monotonic()
        self._next_start = 0.0
        with self.log_path.open("ab") as output:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if self._supervisor is None:
            self._supervisor = threading.Thread(
                target=self._supervise, name="frpc-supervisor", daemon=True
            )
            self._supervisor.start()

    def _reload(self) -> bool:
        url = f"http://127.0.0.1:{self.admin_port}/api/reload"
        for attempt in range(20):  # frpc's admin API needs a moment after a start
            try:
                response = requests.get(url, auth=(self.admin_user, self.admin_password), timeout=5)
                if response.status_code == 200:
                    return True
                log.warning(
                    "frpc reload answered %s: %s", response.status_code, response.text[:200]
                )
                return False
            except requests.RequestException:
                if not self.running:
                    return False
                time.sleep(0.1 * (attempt + 1))
        return False

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                process = self._process
                if process is None or process.poll() is None or self._stopping.is_set():
                    continue
                if self._next_start == 0.0:
                    if time.monotonic() - self._started_at > 30:
                        self._failures = 0  # it ran well for a while: not a crash loop
                    self._failures += 1
                    delay = min(self.RESTART_DELAY_MAX, 2.0 ** (self._failures - 1))
                    self._next_start = time.monotonic() + delay
                    log.warning(
                        "frpc exited with code %s; restarting it in %.0f s (log: %s)",
                        process.returncode,
                        delay,
                        self.log_path,
                    )
                if time.monotonic() >= self._next_start:
                    self._next_start = 0.0
                    self._start()

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._process = None

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self._terminate()

    def status(self) -> dict[str, Any]:
        return {"binary": self.binary, "running": self.running, "config": str(self.config_path)}
