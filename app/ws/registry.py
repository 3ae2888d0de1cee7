"""The agent connections this process holds, one per node, claimed in Redis across processes."""

from __future__ import annotations

import logging

import redis

from app.fleet import commands
from app.ws.connection import CLOSE_REPLACED, AgentConnection

log = logging.getLogger(__name__)


class ConnectionRegistry:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self.connections: dict[str, AgentConnection] = {}

    def get(self, node_id: str) -> AgentConnection | None:
        return self.connections.get(node_id)

    def open_connections(self) -> list[AgentConnection]:
        return [c for c in list(self.connections.values()) if not c.closed]

    def attach(self, conn: AgentConnection) -> None:
        # Claim first, register second: a sweep that read the previous owner while the claim was
        # in flight must not find the new connection yet, or it would close it as replaced.
        commands.claim_connection(conn.node_id, conn.token, client=self.redis)
        old = self.connections.get(conn.node_id)
        self.connections[conn.node_id] = conn
        if old is not None:
            old.close(CLOSE_REPLACED, "replaced by a newer connection")

    def detach(self, conn: AgentConnection) -> None:
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
        try:
            commands.release_connection(conn.node_id, conn.token, client=self.redis)
        except redis.RedisError:
            log.warning("could not release the connection record", exc_info=True)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)
