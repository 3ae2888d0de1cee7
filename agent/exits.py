"""How a rental's container goes away: reported to the platform first, then removed.

`finish` serves both ways a rental ends: a stop command, and a container that ended by itself,
which the ExitWatcher finds by looking at the engine every few seconds (and at once when poked).
"""

from __future__ import annotations

import logging
import threading
import time

from agent.containers import Engine, ManagedContainer
from agent.failures import EngineUnavailable
from agent.link import Link, NotConnected
from agent.logs import FINAL_REQUEST, FINAL_TAIL, log_frames
from agent.node import NodeState
from agent.protocol import MAX_LOG_BYTES
from agent.tunnels import Tunnels

log = logging.getLogger("agent.exits")


def send_logs(
    link: Link, request_id: str, rental_id: str, found: tuple[list[str], bool] | None
) -> None:
    lines, truncated = found if found is not None else ([], False)
    for frame in log_frames(request_id, rental_id, lines, truncated):
        link.send("logs", frame)


def finish(
    engine: Engine,
    link: Link,
    tunnels: Tunnels,
    container: ManagedContainer,
    *,
    asked: bool,
    final_logs: bool,
) -> None:
    """Report an ended container (its last 64 KiB of output, then `instance_stopped`) and remove
    it with its network. `final_logs`: the platform understands `logs` frames.

    A stop the platform `asked` for is answered once the container and its tunnels are gone; a
    container that ended
    by itself stays until it is reported, as the only record of its exit (NotConnected leaves it).
    """
    if final_logs:
        found = engine.logs_of(container.container_id, tail=FINAL_TAIL, max_bytes=MAX_LOG_BYTES)
        send_logs(link, FINAL_REQUEST, container.rental_id, found)
    if asked:
        engine.remove(container.rental_id, container.container_id)
        tunnels.sync()
    link.send(
        "instance_stopped",
        {
            "rental_id": container.rental_id,
            "container_id": container.container_id,
            "exit_code": container.exit_code,
        },
    )
    if not asked:
        engine.remove(container.rental_id, container.container_id)


class ExitWatcher:
    POLL = 2.0
    NETWORK_SWEEP = 60.0  # seconds between looks for networks whose container is gone

    def __init__(self, engine: Engine, link: Link, state: NodeState, tunnels: Tunnels):
        self.engine = engine
        self.link = link
        self.state = state
        self.tunnels = tunnels
        self._poke = threading.Event()
        self._warned = False
        self._swept = 0.0

    def poke(self) -> None:
        self._poke.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._poke.wait(self.POLL)
            self._poke.clear()
            node_id = self.state.node_id
            if not self.link.connected or node_id is None or stop.is_set():
                continue
            try:
                containers = self.engine.managed(node_id)
                self.state.busy = any(c.state == "running" for c in containers)
                if self._report_exits(node_id, containers):
                    self.tunnels.sync()
                if time.monotonic() - self._swept > self.NETWORK_SWEEP:
                    self._sweep_networks(node_id, {c.rental_id for c in containers})
                self._warned = False
            except EngineUnavailable as exc:
                if not self._warned:
                    log.error("%s", exc)
                    self._warned = True
            except NotConnected:
                pass
            except Exception:
                log.exception("checking for ended containers failed")

    def _sweep_networks(self, node_id: str, live: set[str]) -> None:
        """Remove rental networks left without a container (one removed by hand, say)."""
        self._swept = time.monotonic()
        for rental_id in self.engine.rental_networks(node_id):
            if not rental_id or rental_id in live:
                continue
            lock = self.state.rental_lock(rental_id)
            if not lock.acquire(blocking=False):
                continue  # a start is creating it right now
            try:
                if self.engine.find(node_id, rental_id) is None:
                    log.info("removing the network of rental %s: its container is gone", rental_id)
                    self.engine.remove_network(rental_id)
            finally:
                lock.release()
            self.state.forget(rental_id)

    def _report_exits(self, node_id: str, containers: list[ManagedContainer]) -> bool:
        changed = False
        for seen in containers:
            if not seen.ended:
                continue
            lock = self.state.rental_lock(seen.rental_id)
            if not lock.acquire(blocking=False):
                continue  # a command is handling this rental right now
            try:
                current = self.engine.find(node_id, seen.rental_id)
                if current is None or not current.ended:
                    continue
                log.info(
                    "rental %s ended by itself (exit code %s)", current.rental_id, current.exit_code
                )
                finish(
                    self.engine,
                    self.link,
                    self.tunnels,
                    current,
                    asked=False,
                    final_logs=self.state.understands("logs"),
                )
                changed = True
            finally:
                lock.release()
            self.state.forget(seen.rental_id)
        return changed
