"""The agent's session loop: connect, say hello, send heartbeats, hand frames to the commands.

Threads: the main thread owns the connection (connect, receive, reconnect with backoff); one thread
per connection sends heartbeats; the command pool (agent/commands.py) carries out commands; the
exit watcher (agent/exits.py) reports containers that ended by themselves. The container engine
is the only state: after any reconnect or restart the agent reports what runs and the platform
decides.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from typing import Any

import websocket

from agent import __version__
from agent.commands import Commands
from agent.config import FAKE_GPUS_ENV, AgentSettings
from agent.containers import Engine
from agent.exits import ExitWatcher
from agent.failures import EngineUnavailable
from agent.frpc import Frpc
from agent.hardware import Hardware
from agent.link import ConnectionLost, Link, NotConnected, Unauthorized
from agent.node import NodeState
from agent.protocol import ProtocolError, decode_from_platform, encode
from agent.tunnels import Tunnels

log = logging.getLogger("agent")


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter: half fixed, half random, so agents do not reconnect together."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Agent:
    WELCOME_TIMEOUT = 15.0
    UNAUTHORIZED_DELAY = 60.0
    STABLE_SESSION = 30.0  # a session this long resets the backoff

    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.hardware = Hardware(settings.data_dir, fake_gpus=settings.fake_gpus)
        self.engine = Engine(
            settings.docker_host,
            publish_ip=settings.publish_ip,
            hardware=self.hardware,
            pids_limit=settings.pids_limit,
            allow_private_registries=settings.allow_private_registries,
        )
        self.state = NodeState(settings.heartbeat_interval)
        self.link = Link()
        self.tunnels = Tunnels(
            self.engine,
            Frpc(settings.frpc_bin, settings.data_dir, local_ip=settings.publish_ip),
            self.state,
        )
        self.exits = ExitWatcher(self.engine, self.link, self.state, self.tunnels)
        self.commands = Commands(
            engine=self.engine,
            link=self.link,
            state=self.state,
            tunnels=self.tunnels,
            exits=self.exits,
        )
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None  # also while connecting, so stop() can abort

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        log.info("dc-agent %s starting; platform %s", __version__, self.settings.ws_url)
        if self.settings.fake_gpus:
            log.warning(
                "FAKE GPUs in use (%s=%d): this node reports %d made-up GPUs instead of its real "
                "ones; for tests and development only, rentals get no real GPU",
                FAKE_GPUS_ENV,
                self.settings.fake_gpus,
                self.settings.fake_gpus,
            )
        if not self.engine.ping():
            log.warning(
                "the container engine does not answer yet (%s); rentals cannot start until it does",
                self.settings.docker_host or "engine default",
            )
        self.hardware.detect_specs()  # logs once now when there is no GPU driver
        watcher = threading.Thread(
            target=self.exits.run, args=(self._stop,), name="exit-watcher", daemon=True
        )
        watcher.start()
        attempt = 0
        while not self._stop.is_set():
            began = time.monotonic()
            delay: float | None = None
            try:
                self._session()
            except Unauthorized as exc:
                delay = self.UNAUTHORIZED_DELAY
                log.error("%s; retrying in %.0f s", exc, delay)
            except (
                ConnectionLost,
                NotConnected,
                websocket.WebSocketException,
                OSError,
                ProtocolError,
            ) as exc:
                if not self._stop.is_set():
                    log.warning("connection to the platform failed: %s", exc or type(exc).__name__)
            except Exception:  # a bug must cost a reconnect, not the daemon
                log.exception("unexpected error in the connection; reconnecting")
            finally:
                self._disconnect()
            if self._stop.is_set():
                break
            attempt = 1 if time.monotonic() - began > self.STABLE_SESSION else attempt + 1
            if delay is None:
                delay = backoff_delay(attempt)
                log.info("reconnecting in %.1f s", delay)
            self._stop.wait(delay)
        self.commands.close()
        self.tunnels.close()
        log.info("dc-agent stopped; rental containers keep running")
        return 0

    def stop(self) -> None:
        self._stop.set()
        self.exits.poke()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing to do about it
                ws.abort()

    # ------------------------------------------------------------ connection
    def _connect(self) -> websocket.WebSocket:
        headers = [
            f"Authorization: Bearer {self.settings.api_key}",
            f"User-Agent: dc-agent/{__version__}",
        ]
        try:
            return websocket.create_connection(
                self.settings.ws_url, header=headers, timeout=15, enable_multithread=True
            )
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code in (401, 403):
                raise Unauthorized(
                    f"the platform refused the API key (HTTP {exc.status_code}): check DC_API_KEY; "
                    "a rotated key replaces the old one at once"
                ) from None
            raise ConnectionLost(f"the platform answered HTTP {exc.status_code}") from None

    def _session(self) -> None:
        ws = self._connect()
        self._ws = ws
        try:
            ws.settimeout(self.WELCOME_TIMEOUT)
            opcode, frame = ws.recv_data_frame(True)
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                raise ConnectionLost("the platform closed the connection before welcome")
            welcome = decode_from_platform(frame.data)
            if welcome.event != "welcome":
                raise ConnectionLost(f"the platform sent {welcome.event!r} before welcome")
            self.state.apply_welcome(welcome.data)
            ws.send(encode("hello", self._hello()))
        except websocket.WebSocketTimeoutException:
            ws.abort()
            raise ConnectionLost("the platform sent no welcome") from None
        except BaseException:
            ws.abort()
            raise
        self.link.attach(ws)
        log.info("connected to the platform as node %s", self.state.node_id)
        self.tunnels.sync()
        self.exits.poke()  # report containers that ended while disconnected
        done = threading.Event()
        beats = threading.Thread(
            target=self._heartbeats, args=(ws, done), name="heartbeat", daemon=True
        )
        beats.start()
        try:
            self._receive(ws)
        finally:
            done.set()

    def _receive(self, ws: websocket.WebSocket) -> None:
        idle = max(30.0, 3 * self.state.heartbeat_interval)
        ws.settimeout(idle)
        last_frame = time.monotonic()
        while not self._stop.is_set():
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_frame > 2 * idle:
                    raise ConnectionLost("the platform stopped answering") from None
                ws.ping()
                continue
            last_frame = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionLost("the platform closed the connection")
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                try:
                    self.commands.handle(frame.data)
                except Exception:  # one frame must not cost the connection
                    log.exception("a frame from the platform could not be handled")

    def _disconnect(self) -> None:
        self.link.detach()
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # the socket may already be gone
                ws.abort()

    def _hello(self) -> dict[str, Any]:
        """Every rental container on this node, running or ended, for the platform to reconcile."""
        assert self.state.node_id is not None
        try:
            containers = self.engine.managed(self.state.node_id)
        except EngineUnavailable as exc:
            log.error("%s: reporting no containers", exc)
            containers = []
        self.state.busy = any(c.state == "running" for c in containers)
        return {
            "agent_version": __version__,
            "specs": self.hardware.detect_specs(),
            "containers": [
                {"rental_id": c.rental_id, "container_id": c.container_id, "state": c.state}
                for c in containers
            ],
            "draining": self.state.draining,
        }

    # ------------------------------------------------------------ heartbeats
    def _heartbeats(self, ws: websocket.WebSocket, done: threading.Event) -> None:
        while not done.is_set():
            try:
                beat = {
                    "node_id": self.state.node_id,
                    # From the exit watcher's last look: a slow engine must not delay heartbeats.
                    "status": "busy" if self.state.busy else "online",
                    "metrics": self.hardware.metrics(),
                }
                ws.send(encode("heartbeat", beat))
            except ProtocolError as exc:
                log.error("heartbeat not sent, its data is invalid: %s", exc.errors)
            except (websocket.WebSocketException, OSError) as exc:
                if not done.is_set():
                    log.warning("heartbeat failed (%s): reconnecting", exc)
                    ws.abort()  # ends the receive loop, which reconnects
                return
            done.wait(self.state.heartbeat_interval)
