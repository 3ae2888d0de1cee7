"""The agent's main loop: connect, say hello, send heartbeats, carry out the platform's commands.

Threads: the main thread owns the connection (connect, receive, reconnect with backoff); one thread
per connection sends heartbeats; a small pool runs commands (a slow image pull must not hold up a
stop); one thread reports containers that ended by themselves. The container engine is the only
state: after any reconnect or restart the agent reports what runs and the platform decides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import websocket

from agent import __version__
from agent.config import AgentSettings
from agent.containers import Engine, EngineUnavailable, ManagedContainer, StartFailed
from agent.frpc import Frpc, Proxy
from agent.hardware import Hardware
from agent.protocol import (
    Message,
    ProtocolError,
    decode_from_platform,
    encode,
    error_frame,
)

log = logging.getLogger("agent")

DRAINING_REASON = "draining"


class Unauthorized(Exception):
    """The platform refused the API key."""


class ConnectionLost(Exception):
    """The connection ended or the platform did not follow the protocol."""


class NotConnected(Exception):
    """No connection to send on; the platform resends unacknowledged commands after a reconnect."""


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter: half fixed, half random, so agents do not reconnect together."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        out = []
        for key, value in errors.items():
            out += _flatten(
                value, f"{prefix}{key}." if not isinstance(value, list) else f"{prefix}{key}"
            )
        return out
    if isinstance(errors, list):
        return [
            f"{prefix.rstrip('.')}: {item}"
            if isinstance(item, str)
            else "; ".join(_flatten(item, prefix))
            for item in errors
        ]
    return [f"{prefix.rstrip('.')}: {errors}"]


class Agent:
    WELCOME_TIMEOUT = 15.0
    UNAUTHORIZED_DELAY = 60.0
    STABLE_SESSION = 30.0  # a session this long resets the backoff
    EXIT_POLL = 2.0

    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.hardware = Hardware(settings.data_dir)
        self.engine = Engine(
            settings.docker_host, publish_ip=settings.publish_ip, hardware=self.hardware
        )
        self.frpc = Frpc(settings.frpc_bin, settings.data_dir, local_ip=settings.publish_ip)
        self.node_id: str | None = None
        self.draining = False
        self.tunnel: dict[str, Any] | None = None
        self.heartbeat_interval = settings.heartbeat_interval
        self._ws: websocket.WebSocket | None = None
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="command")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._tunnel_guard = threading.Lock()
        self._engine_warned = False
        self._busy = False  # a rental container is running

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        log.info("dc-agent %s starting; platform %s", __version__, self.settings.ws_url)
        if not self.engine.ping():
            log.warning(
                "the container engine does not answer yet (%s); rentals cannot start until it does",
                self.settings.docker_host or "engine default",
            )
        self.hardware.detect_specs()  # logs once now when there is no GPU driver
        watcher = threading.Thread(target=self._watch_exits, name="exit-watcher", daemon=True)
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
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.frpc.close()
        log.info("dc-agent stopped; rental containers keep running")
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
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
        self._ws = None
        try:
            ws.settimeout(self.WELCOME_TIMEOUT)
            opcode, frame = ws.recv_data_frame(True)
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                raise ConnectionLost("the platform closed the connection before welcome")
            welcome = decode_from_platform(frame.data)
            if welcome.event != "welcome":
                raise ConnectionLost(f"the platform sent {welcome.event!r} before welcome")
        except websocket.WebSocketTimeoutException:
            ws.abort()
            raise ConnectionLost("the platform sent no welcome") from None
        except BaseException:
            ws.abort()
            raise
        try:
            self._apply_welcome(welcome.data)
            ws.send(encode("hello", self._hello()))
        except BaseException:
            ws.abort()
            raise
        self._ws = ws
        log.info("connected to the platform as node %s", self.node_id)
        self._sync_tunnels()
        self._poke.set()  # report containers that ended while disconnected
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
        idle = max(30.0, 3 * self.heartbeat_interval)
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
                    self._handle(frame.data)
                except Exception:  # one frame must not cost the connection
                    log.exception("a frame from the platform could not be handled")

    def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # the socket may already be gone
                ws.abort()

    def _apply_welcome(self, data: dict[str, Any]) -> None:
        if self.node_id is not None and self.node_id != data["node_id"]:
            log.warning(
                "the API key now belongs to node %s (was %s)", data["node_id"], self.node_id
            )
        self.node_id = data["node_id"]
        if data.get("heartbeat_interval"):
            self.heartbeat_interval = float(data["heartbeat_interval"])
        self.draining = bool(data.get("draining"))
        if data.get("tunnel"):
            self.tunnel = dict(data["tunnel"])

    def _hello(self) -> dict[str, Any]:
        assert self.node_id is not None
        try:
            containers = self.engine.managed(self.node_id)
        except EngineUnavailable as exc:
            log.error("%s: reporting no containers", exc)
            containers = []
        self._busy = any(c.state == "running" for c in containers)
        return {
            "agent_version": __version__,
            "specs": self.hardware.detect_specs(),
            "containers": [
                {"rental_id": c.rental_id, "container_id": c.container_id, "state": c.state}
                for c in containers
            ],
            "draining": self.draining,
        }

    def _send(self, event: str, data: dict[str, Any], id: str | None = None) -> None:
        self._send_raw(encode(event, data, id))

    def _send_raw(self, frame: str) -> None:
        ws = self._ws
        if ws is None:
            raise NotConnected("not connected to the platform")
        try:
            ws.send(frame)
        except (websocket.WebSocketException, OSError) as exc:
            raise NotConnected(f"sending failed: {exc}") from None

    def _ack(self, command_id: str | None) -> None:
        if command_id:
            self._send("ack", {"id": command_id})

    # ------------------------------------------------------------ heartbeats
    def _heartbeats(self, ws: websocket.WebSocket, done: threading.Event) -> None:
        while not done.is_set():
            try:
                beat = {
                    "node_id": self.node_id,
                    "status": self._status(),
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
            done.wait(self.heartbeat_interval)

    def _status(self) -> str:
        # From the exit watcher's last look: a slow container engine must not delay heartbeats.
        return "busy" if self._busy else "online"

    # ------------------------------------------------------------ commands
    def _handle(self, raw: bytes | str) -> None:
        try:
            message = decode_from_platform(raw)
        except ProtocolError as exc:
            self._refuse(raw, exc)
            return
        handlers: dict[str, Callable[[Message], None]] = {
            "start_instance": self._start_instance,
            "stop_instance": self._stop_instance,
        }
        if message.event in handlers:
            self._pool.submit(self._run_command, handlers[message.event], message)
        elif message.event == "drain_node":
            if not self.draining:
                log.info("draining: new rentals are refused; running ones continue")
            self.draining = True
            self._quietly(self._ack, message.id)
        elif message.event == "welcome":
            self._apply_welcome(message.data)
            self._quietly(self._ack, message.id)
        elif message.event == "error":
            log.warning(
                "the platform reported an error: %s %s",
                message.data.get("code"),
                message.data.get("message"),
            )

    def _refuse(self, raw: bytes | str, exc: ProtocolError) -> None:
        """A frame we cannot accept: say why, fail the rental it names, and never start anything."""
        log.warning("refused a frame from the platform: %s %s", exc.message, exc.errors or "")
        rental_id = None
        try:
            obj = json.loads(raw)
            if obj.get("event") == "start_instance":
                rental_id = obj["data"]["rental_id"]
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        try:
            self._send_raw(
                error_frame(exc.code, exc.message, frame_id=exc.frame_id, errors=exc.errors)
            )
            if rental_id is not None:
                details = "; ".join(_flatten(exc.errors)) if exc.errors else exc.message
                # Without a usable rental id the error frame is all there is to say.
                with contextlib.suppress(ProtocolError):
                    self._send(
                        "instance_failed",
                        {
                            "rental_id": rental_id,
                            "reason": f"The rental's settings are invalid: {details}"[:2000],
                        },
                    )
            self._ack(exc.frame_id)
        except NotConnected as send_exc:
            log.warning("could not answer the refused frame: %s", send_exc)

    def _quietly(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except NotConnected as exc:
            log.warning("%s", exc)

    def _run_command(self, handler: Callable[[Message], None], message: Message) -> None:
        try:
            handler(message)
        except NotConnected as exc:
            log.warning(
                "%s %s not answered (%s); the platform sends it again after a reconnect",
                message.event,
                message.data.get("rental_id"),
                exc,
            )
        except Exception as exc:
            log.exception("%s %s failed", message.event, message.data.get("rental_id"))
            if message.event == "start_instance":
                self._quietly(
                    self._send,
                    "instance_failed",
                    {
                        "rental_id": message.data["rental_id"],
                        "reason": f"The agent could not start the instance: {exc}"[:2000],
                    },
                )
                self._quietly(self._ack, message.id)

    def _rental_lock(self, rental_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(rental_id, threading.Lock())

    def _start_instance(self, message: Message) -> None:
        data = message.data
        rental_id = data["rental_id"]
        if data.get("tunnel"):
            self.tunnel = dict(data["tunnel"])
        assert self.node_id is not None
        with self._rental_lock(rental_id):
            try:
                if self.draining and self.engine.find(self.node_id, rental_id) is None:
                    log.info("start of rental %s refused: draining", rental_id)
                    self._send(
                        "instance_failed", {"rental_id": rental_id, "reason": DRAINING_REASON}
                    )
                    self._ack(message.id)
                    return
                container, created = self.engine.start(self.node_id, data)
            except StartFailed as exc:
                log.info("rental %s failed to start: %s", rental_id, exc)
                self._send("instance_failed", {"rental_id": rental_id, "reason": str(exc)[:2000]})
                self._ack(message.id)
                return
            except EngineUnavailable as exc:
                log.error("rental %s: %s", rental_id, exc)
                self._send(
                    "instance_failed",
                    {
                        "rental_id": rental_id,
                        "reason": "The node's container engine is not available; try another node.",
                    },
                )
                self._ack(message.id)
                return
            if created:
                log.info("rental %s started: container %s", rental_id, container.container_id[:12])
            self._sync_tunnels()
            # Sent under the rental's lock, so a container that exits at once is reported
            # stopped only after it was reported started.
            self._send(
                "instance_started", {"rental_id": rental_id, "container_id": container.container_id}
            )
        self._poke.set()
        self._ack(message.id)

    def _stop_instance(self, message: Message) -> None:
        data = message.data
        rental_id = data["rental_id"]
        assert self.node_id is not None
        with self._rental_lock(rental_id):
            try:
                stopped = self.engine.stop(self.node_id, rental_id, grace=data["grace_seconds"])
            except EngineUnavailable as exc:
                # Not acknowledged: the platform sends the stop again after a reconnect.
                log.error("rental %s cannot be stopped now: %s", rental_id, exc)
                return
        if stopped:
            log.info("rental %s stopped (exit code %s)", rental_id, stopped[0].exit_code)
            self._sync_tunnels()
            answer = {
                "rental_id": rental_id,
                "container_id": stopped[0].container_id,
                "exit_code": stopped[0].exit_code,
            }
        else:
            answer = {
                "rental_id": rental_id,
                "container_id": data.get("container_id"),
                "exit_code": None,
            }
        self._send("instance_stopped", answer)
        self._ack(message.id)

    # ------------------------------------------------------------ containers that ended
    def _watch_exits(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.EXIT_POLL)
            self._poke.clear()
            if self._ws is None or self.node_id is None or self._stop.is_set():
                continue
            try:
                containers = self.engine.managed(self.node_id)
                self._busy = any(c.state == "running" for c in containers)
                if self._report_exits(self.node_id, containers):
                    self._sync_tunnels()
                self._engine_warned = False
            except EngineUnavailable as exc:
                if not self._engine_warned:
                    log.error("%s", exc)
                    self._engine_warned = True
            except NotConnected:
                pass
            except Exception:
                log.exception("checking for ended containers failed")

    def _report_exits(self, node_id: str, containers: list[ManagedContainer]) -> bool:
        changed = False
        for seen in containers:
            if not seen.ended:
                continue
            lock = self._rental_lock(seen.rental_id)
            if not lock.acquire(blocking=False):
                continue  # a command is handling this rental right now
            try:
                current = self.engine.find(node_id, seen.rental_id)
                if current is None or not current.ended:
                    continue
                log.info(
                    "rental %s ended by itself (exit code %s)", current.rental_id, current.exit_code
                )
                self._send(
                    "instance_stopped",
                    {
                        "rental_id": current.rental_id,
                        "container_id": current.container_id,
                        "exit_code": current.exit_code,
                    },
                )
                # Removed only once reported: until then the container is the record of the exit.
                self.engine.remove(current.container_id)
                changed = True
            finally:
                lock.release()
        return changed

    # ------------------------------------------------------------ tunnels
    def _sync_tunnels(self) -> None:
        if self.node_id is None:
            return
        with self._tunnel_guard:
            try:
                containers = self.engine.managed(self.node_id)
            except EngineUnavailable as exc:
                log.warning("tunnels not updated: %s", exc)
                return
            proxies = [
                Proxy(
                    rental_id=c.rental_id,
                    container_port=port,
                    local_port=c.host_ports[port],
                    remote_port=public,
                )
                for c in containers
                if c.state == "running"
                for port, public in c.public_ports.items()
                if port in c.host_ports
            ]
            try:
                self.frpc.update(self.tunnel, proxies)
            except OSError as exc:
                log.error("frpc could not be updated: %s", exc)
