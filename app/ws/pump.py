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

import redis
from sqlalchemy.exc import SQLAlchemyError

from app.auth.node_keys import dead_key_ids
from app.auth.reads import read_pool
from app.fleet import commands
from app.ws.connection import CLOSE_RECONNECT, CLOSE_REPLACED, CLOSE_REVOKED, AgentConnection
from app.ws.registry import ConnectionRegistry

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10.0
SWEEP_CHUNK = 250
DELIVERY_PAGE = 100
MESSAGE_BATCH = 500  # pub/sub messages handled together


class CommandPump:
    def __init__(
        self, client: redis.Redis, registry: ConnectionRegistry, stopping: threading.Event
    ):
        self.redis = client
        self.registry = registry
        self.stopping = stopping
        self._sweep_chunk = client.register_script(_SWEEP_SCRIPT)

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
                        batch = [message]
                        # What else has arrived: a reconnect storm announces thousands of
                        # claims, and each claim held here needs its owner read (one pipeline).
                        while len(batch) < MESSAGE_BATCH:
                            more = pubsub.get_message(timeout=0.0)
                            if more is None:
                                break
                            batch.append(more)
                        self.on_messages([(m["channel"], m["data"]) for m in batch])
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
        self.on_messages([(channel, payload)])

    def on_messages(self, messages: list[tuple[str, str]]) -> None:
        """New commands are sent; connections claimed elsewhere, revoked or asked to reconnect
        are closed. The owners of claimed nodes are read in one pipeline."""
        claimed: dict[str, AgentConnection] = {}
        for channel, payload in messages:
            if channel == commands.COMMANDS_CHANNEL:
                conn = self.registry.get(payload)
                if conn is not None and conn.ready:
                    self.deliver_soon(conn)
                continue
            try:
                notice = json.loads(payload)
                node_id = str(notice["node_id"])
            except (ValueError, KeyError, TypeError):
                continue
            conn = self.registry.get(node_id)
            if conn is None:
                continue
            if notice.get("revoke"):
                conn.close(CLOSE_REVOKED, "the node's API key was rotated")
            elif notice.get("reconnect"):
                conn.close(CLOSE_RECONNECT, "reconnect: the node's settings changed")
            else:
                claimed[node_id] = conn
        if not claimed:
            return
        pipe = self.redis.pipeline(transaction=False)
        for node_id in claimed:
            pipe.get(commands.owner_key(node_id))
        for conn, owner in zip(claimed.values(), pipe.execute(), strict=True):
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
            if not chunk:
                continue
            keys: list[str] = []
            args: list[str] = [str(commands.OWNER_TTL_SECONDS)]
            for conn in chunk:
                keys += [commands.stream_key(conn.node_id), commands.owner_key(conn.node_id)]
                args += ["-" if conn.last_sent_id is None else f"({conn.last_sent_id}", conn.token]
            for index, finding in self._sweep_chunk(keys=keys, args=args):
                conn = chunk[int(index) - 1]
                if finding == _REPLACED:
                    conn.close(CLOSE_REPLACED, "replaced by a newer connection")
                elif conn.ready:
                    self.deliver_soon(conn)

    def _close_revoked(self, chunk: list[AgentConnection]) -> list[AgentConnection]:
        """Close the connections whose API key was revoked (a missed revoke message must not let
        them live on); return the others. The database is the authority, not Redis."""
        key_ids = {conn.key_id for conn in chunk if conn.key_id is not None}
        try:
            dead = read_pool().run(lambda session: dead_key_ids(session, key_ids))
        except SQLAlchemyError:
            log.warning("could not check the agents' keys", exc_info=True)
            return chunk
        kept = []
        for conn in chunk:
            if conn.key_id in dead:
                conn.close(CLOSE_REVOKED, "the node's API key was rotated")
            else:
                kept.append(conn)
        return kept


# One call per chunk of the sweep, answering only for the connections that need something.
# KEYS: per connection, its node's command stream and connection record. ARGV: the record's TTL,
# then per connection the lower bound of the commands it has not sent ("-" or "(<last sent id>")
# and its token. A record that was lost (Redis restarted) is set to the connection that stands.
# Returns {position (1-based), finding} pairs.
_PENDING = "pending"
_REPLACED = "replaced"
_SWEEP_SCRIPT = """
local found = {}
for i = 1, #KEYS / 2 do
  local owner = redis.call('GET', KEYS[2 * i])
  local token = ARGV[2 * i + 1]
  if not owner then
    redis.call('SET', KEYS[2 * i], token, 'NX', 'EX', ARGV[1])
  end
  if owner and owner ~= token then
    found[#found + 1] = {i, 'replaced'}
  elseif #redis.call('XRANGE', KEYS[2 * i - 1], ARGV[2 * i], '+', 'COUNT', 1) > 0 then
    found[#found + 1] = {i, 'pending'}
  end
end
return found
"""
