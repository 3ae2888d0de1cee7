"""Frame dispatch: what the platform does with each validated frame from an agent.

Acks delete the command from the node's stream, heartbeats go to the batch writer, and every
other event is handed to the actor that owns it, through one table: an event's fields (as
agent/protocol.py validates them) are the actor's keyword arguments after `node_id`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

import redis

from agent.protocol import ProtocolError, decode_from_agent
from app.fleet import commands, live
from app.fleet.actors import node_seen, on_self_test_result, record_hello
from app.queue.actors import Actor
from app.rentals import logs
from app.rentals.actors import (
    on_final_logs,
    on_instance_failed,
    on_instance_progress,
    on_instance_started,
    on_instance_stopped,
)
from app.ws.connection import AgentConnection
from app.ws.heartbeats import HeartbeatWriter
from app.ws.pump import CommandPump

log = logging.getLogger(__name__)

ACTOR_SENDS = 16  # concurrent Dramatiq sends (its broker's pool refuses past 100)

# Agent event -> the actor that owns it, called as actor(node_id=..., **event fields).
AGENT_EVENT_ACTORS: Final[dict[str, Actor[..., None]]] = {
    "instance_started": on_instance_started,
    "instance_failed": on_instance_failed,
    "instance_stopped": on_instance_stopped,
    "instance_progress": on_instance_progress,
    "self_test_result": on_self_test_result,
}


class ActorSends:
    """Sends to actors from the socket server, a bounded number at a time."""

    def __init__(self, limit: int = ACTOR_SENDS):
        self._slots = threading.BoundedSemaphore(limit)

    def send(self, actor: Actor[..., None], **kwargs: Any) -> None:
        with self._slots:
            actor.send(**kwargs)

    def node_back(self, node_id: str, seen_at: float) -> None:
        """A node marked offline was heard from: a worker brings it back now."""
        try:
            self.send(node_seen, node_id=node_id, seen_at=seen_at)
        except redis.RedisError:  # the liveness sweep brings it back a little later
            log.warning("node_seen not sent", extra={"node_id": node_id})


class FrameDispatch:
    def __init__(
        self,
        client: redis.Redis,
        sends: ActorSends,
        heartbeats: HeartbeatWriter,
        pump: CommandPump,
    ):
        self.redis = client
        self.sends = sends
        self.heartbeats = heartbeats
        self.pump = pump

    def handle(self, conn: AgentConnection, raw: str | bytes) -> None:
        try:
            message = decode_from_agent(raw)
        except ProtocolError as exc:
            conn.send_error(exc.code, exc.message, frame_id=exc.frame_id, errors=exc.errors)
            return
        event, data = message.event, message.data
        if event == "ack":
            try:
                commands.ack(conn.node_id, data["id"], client=self.redis)
            except redis.RedisError:  # the command stays queued and comes again on reconnect
                conn.send_error(
                    "unavailable", "The ack was not recorded; send it again.", frame_id=message.id
                )
            return
        if event == "error":
            log.warning(
                "agent reported an error", extra={"node_id": conn.node_id, "code": data.get("code")}
            )
            return
        if event == "hello":
            if conn.said_hello:
                # Each hello makes the platform queue stops for what it reports: one per
                # connection, or an agent could fill its command stream by repeating it.
                conn.send_error(
                    "hello_repeated",
                    "hello is accepted once per connection; reconnect to send another.",
                    frame_id=message.id,
                )
                return
            if len(data["containers"]) > conn.max_containers:
                conn.send_error(
                    "too_many_containers",
                    f"A hello may report at most {conn.max_containers} containers.",
                    frame_id=message.id,
                )
                return
            self.hello(conn, data)
            return
        if not conn.ready:
            conn.send_error("hello_expected", "Send hello first.", frame_id=message.id)
            return
        if event == "heartbeat":
            if data["node_id"] != conn.node_id:
                conn.send_error(
                    "wrong_node", "node_id is not the node of this API key.", frame_id=message.id
                )
                return
            self.heartbeats.add(
                live.Sighting(conn.node_id, time.time(), data["status"], data["metrics"])
            )
            return
        if event == "logs":
            self.logs(conn, data, message.id)
            return
        self.agent_event(conn, event, data, message.id)

    def logs(self, conn: AgentConnection, data: dict[str, Any], frame_id: str | None) -> None:
        """A stopping container's last output is kept by a worker; an answer to fetch_logs goes
        to the API request waiting for it (or nowhere, if none waits)."""
        if data["request_id"] == logs.FINAL:
            self.agent_event(conn, "logs", data, frame_id, actor=on_final_logs)
            return
        try:
            logs.deliver(self.redis, conn.node_id, data)
        except redis.RedisError:  # the request times out with a 504; nothing to retry
            log.warning("logs frame not delivered", extra={"node_id": conn.node_id})

    def hello(self, conn: AgentConnection, data: dict[str, Any]) -> None:
        now = time.time()
        conn.said_hello = True
        try:
            self.sends.send(
                record_hello,
                node_id=conn.node_id,
                agent_version=data["agent_version"],
                specs=data["specs"],
                containers=data["containers"],
                seen_at=now,
            )
        except redis.RedisError:
            conn.said_hello = False  # not taken: the agent may send it again
            conn.send_error("unavailable", "The platform cannot take the hello now; retry.")
            return
        conn.ready = True
        self.heartbeats.add(live.Sighting(conn.node_id, now, agent_version=data["agent_version"]))
        self.pump.deliver_soon(conn)

    def agent_event(
        self,
        conn: AgentConnection,
        event: str,
        data: dict[str, Any],
        frame_id: str | None,
        actor: Actor[..., None] | None = None,
    ) -> None:
        try:
            self.sends.send(actor or AGENT_EVENT_ACTORS[event], node_id=conn.node_id, **data)
        except redis.RedisError:
            conn.send_error(
                "unavailable",
                f"The platform cannot take {event} now; send it again.",
                frame_id=frame_id,
            )
