"""The command pump: sends each node's unacked commands down the connection this process holds.

One pub/sub subscription tells the process that a node's command stream has a new entry or that
a node's connection moved elsewhere; a periodic sweep (one pipeline over the local nodes)
catches anything a dropped subscription missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid

import redis
from sqlalchemy.exc import SQLAlchemyError

from app.auth.node_keys import live_key_ids
from app.db import new_session
from app.fleet import commands
from app.ws.connection import CLOSE_RECONNECT, CLOSE_REPLACED, CLOSE_REVOKED, AgentConnection
from app.ws.registry import ConnectionRegistry

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10.0
SWEEP_CHUNK = 250
DELIVERY_PAGE = 100


class CommandPump:
    def __init__(
        self, client: redis.Redis, registry: ConnectionRegistry, stopping: threading.Event
    ):
        self.redis = client
        self.registry = registry
        self.stopping = stopping

    def deliver_soon(self, conn: AgentConnection) -> None:
        threading.Thread(target=self.deliver, args=(conn,), daemon=True).start()

    def deliver(self, conn: AgentConnection) -> int:
        """Send the node's unacked commands that this connection has not sent yet."""
        sent = 0
        if not conn.ready or conn.closed:
            return sent
        with conn.deliver_lock:
            while not conn.closed:
                try:
                    entries = commands.pending_entries(
                        conn.node_id,
                        after=conn.last_sent_id,
                        count=DELIVERY_PAGE,
                        client=self.redis,
                    )
                except redis.RedisError:
                    log.warning("command stream unreadable", extra={"node_id": conn.node_id})
                    return sent  # the sweep tries again
                now = time.time()
                for entry in entries:
                    if entry.expired(now):
                        # A start past its deadline: the rental was cancelled meanwhile.
                        self._drop_expired(conn, entry)
                    elif not conn.send(entry.frame):
                        return sent
                    else:
                        sent += 1
                    conn.last_sent_id = entry.entry_id
                if len(entries) < DELIVERY_PAGE:
                    break
        return sent

    def _drop_expired(self, conn: AgentConnection, entry: commands.Pending) -> None:
        try:
            commands.ack(conn.node_id, entry.command_id, client=self.redis)
        except redis.RedisError:
            return  # dropped on the next delivery
        log.info(
            "expired command dropped",
            extra={"node_id": conn.node_id, "command_id": entry.command_id},
        )

    def listen_loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(commands.COMMANDS_CHANNEL, commands.CONNECTIONS_CHANNEL)
                self.sweep()  # anything announced while this process was not subscribed
                next_sweep = time.monotonic() + SWEEP_SECONDS
                backoff = 0.5
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.on_message(message["channel"], message["data"])
                    if time.monotonic() >= next_sweep:
                        self.sweep()
                        next_sweep = time.monotonic() + SWEEP_SECONDS
            except (redis.RedisError, OSError) as exc:
                log.warning("command listener lost Redis; reconnecting", extra={"error": str(exc)})
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("command listener failed")
                self.stopping.wait(backoff)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def on_message(self, channel: str, payload: str) -> None:
        if channel == commands.COMMANDS_CHANNEL:
            conn = self.registry.get(payload)
            if conn is not None and conn.ready:
                self.deliver_soon(conn)
            return
        try:
            notice = json.loads(payload)
            node_id = str(notice["node_id"])
        except (ValueError, KeyError, TypeError):
            return
        conn = self.registry.get(node_id)
        if conn is None:
            return
        if notice.get("revoke"):
            conn.close(CLOSE_REVOKED, "the node's API key was rotated")
            return
        if notice.get("reconnect"):
            conn.close(CLOSE_RECONNECT, "reconnect: the node's settings changed")
            return
        owner = commands.connection_owner(node_id, client=self.redis)
        if owner is not None and owner != conn.token:
            conn.close(CLOSE_REPLACED, "replaced by a newer connection")

    def sweep(self) -> None:
        """Per local connection: any command not yet sent? still the node's live connection,
        made with the node's current key?"""
        conns = self.registry.open_connections()
        for start in range(0, len(conns), SWEEP_CHUNK):
            if start:
                time.sleep(0)  # let heartbeats through between chunks
            chunk = self._close_revoked(conns[start : start + SWEEP_CHUNK])
            pipe = self.redis.pipeline(transaction=False)
            for conn in chunk:
                low = "-" if conn.last_sent_id is None else f"({conn.last_sent_id}"
                pipe.xrange(commands.stream_key(conn.node_id), min=low, max="+", count=1)
                pipe.get(commands.owner_key(conn.node_id))
            replies = pipe.execute()
            for i, conn in enumerate(chunk):
                entries, owner = replies[2 * i], replies[2 * i + 1]
                if owner is None:  # the record was lost (Redis restarted): this one stands
                    self.redis.set(
                        commands.owner_key(conn.node_id),
                        conn.token,
                        nx=True,
                        ex=commands.OWNER_TTL_SECONDS,
                    )
                elif owner != conn.token:
                    conn.close(CLOSE_REPLACED, "replaced by a newer connection")
                    continue
                if entries and conn.ready:
                    self.deliver_soon(conn)

    def _close_revoked(self, chunk: list[AgentConnection]) -> list[AgentConnection]:
        """Close the connections whose API key was revoked (a missed revoke message must not let
        them live on); return the others. The database is the authority, not Redis."""
        keyed = {}
        for conn in chunk:
            try:
                keyed[conn] = uuid.UUID(str(conn.key_id))
            except ValueError:
                continue
        try:
            with new_session() as session:
                live = live_key_ids(session, keyed.values())
        except SQLAlchemyError:
            log.warning("could not check the agents' keys", exc_info=True)
            return chunk
        kept = []
        for conn in chunk:
            if conn in keyed and keyed[conn] not in live:
                conn.close(CLOSE_REVOKED, "the node's API key was rotated")
            else:
                kept.append(conn)
        return kept
