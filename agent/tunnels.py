"""The rentals' public ports: frpc's proxies follow the running containers."""

from __future__ import annotations

import logging
import threading

from agent.containers import Engine
from agent.failures import EngineUnavailable
from agent.frpc import Frpc, Proxy
from agent.node import NodeState

log = logging.getLogger("agent.tunnels")


class Tunnels:
    def __init__(self, engine: Engine, frpc: Frpc, state: NodeState):
        self.engine = engine
        self.frpc = frpc
        self.state = state
        self._guard = threading.Lock()

    def sync(self) -> None:
        """One proxy per published port of every running rental, through the platform's frps."""
        node_id = self.state.node_id
        if node_id is None:
            return
        with self._guard:
            try:
                containers = self.engine.managed(node_id)
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
                self.frpc.update(self.state.tunnel, proxies)
            except OSError as exc:
                log.error("frpc could not be updated: %s", exc)

    def close(self) -> None:
        self.frpc.close()
