"""Durable commands to agents, and who holds each node's socket.

A command is appended to the node's Redis Stream (``dc:node:<id>:commands``) and announced on one
channel; whichever socket-server process holds that node's connection reads the stream and sends
the frame with its ``id``. The agent's ``ack`` deletes the entry; whatever is still in the stream
when an agent (re)connects is sent again. Nothing lives in a process's memory, so any number of
socket servers can run behind a load balancer and a worker may send to a node that is offline.

Connection ownership: ``dc:node:<id>:conn`` holds the token of the node's newest connection. A
process whose connection's token is no longer there closes it (one live connection per node).

What an agent can make the platform store is bounded (docs/security.md):

- **Superseding.** A command about a rental replaces the one before it that it makes pointless:
  a newer ``start_instance`` for a rental replaces the queued one, a ``stop_instance`` replaces
  the queued stop of the same container and the rental's queued start, a ``drain_node`` the
  queued drain. So each rental has at most one start and one stop per container queued.
- **Disposable commands.** Stops the platform queues for containers it does not account for (an
  agent's hello, a late ``instance_started``) are derived from what the agent says and are said
  again on its next hello. When a node's stream reaches ``NODE_COMMAND_STREAM_MAX`` entries, the
  oldest disposable ones are dropped first. The commands about the platform's own rentals are
  never dropped: supersession already bounds them (a handful per rental).
- **Expiry.** ``start_instance`` carries ``expires_at`` (the rental's start deadline) and the
  stream entry its epoch; the pump drops an expired entry instead of sending it, and the agent
  refuses one that arrives late, so a stale start after a long outage never runs.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.orm import Session

from agent.protocol import encode
from app.config import get_settings
from app.db import after_commit
from app.redis_client import get_redis

COMMAND_EVENTS = frozenset(
    {"start_instance", "stop_instance", "drain_node", "fetch_logs", "self_test"}
)
COMMANDS_CHANNEL = "dc:fleet:commands"  # message: a node id whose stream has a new entry
CONNECTIONS_CHANNEL = "dc:fleet:connections"  # message: {"node_id", "revoke"?}
OWNER_TTL_SECONDS = 7 * 24 * 3600

# KEYS: stream, index (command id -> "entry|supersede key"), keys (supersede key -> command id),
#       disposable (sorted set of command ids, oldest first)
# ARGV: command id, frame, channel, node, supersede key, another key it supersedes,
#       disposable (0/1), most entries, expiry (epoch seconds or "")
_FORGET = """
local function forget(cid)
  local v = redis.call('HGET', KEYS[2], cid)
  if v then
    local entry, skey = v, ''
    local sep = string.find(v, '|', 1, true)
    if sep then entry = string.sub(v, 1, sep - 1); skey = string.sub(v, sep + 1) end
    redis.call('XDEL', KEYS[1], entry)
    redis.call('HDEL', KEYS[2], cid)
    if skey ~= '' and redis.call('HGET', KEYS[3], skey) == cid then
      redis.call('HDEL', KEYS[3], skey)
    end
  end
  redis.call('ZREM', KEYS[4], cid)
  return v
end
"""
_ADD = (
    _FORGET
    + """
local disposable = ARGV[7] == '1'
for i, skey in ipairs({ARGV[5], ARGV[6]}) do
  if skey ~= '' then
    local old = redis.call('HGET', KEYS[3], skey)
    if old then
      -- a command that replaces one the platform must deliver is not disposable either
      if i == 1 and redis.call('HEXISTS', KEYS[2], old) == 1
         and not redis.call('ZSCORE', KEYS[4], old) then
        disposable = false
      end
      forget(old)
      redis.call('HDEL', KEYS[3], skey)
    end
  end
end
local over = redis.call('XLEN', KEYS[1]) + 1 - tonumber(ARGV[8])
while over > 0 do
  local oldest = redis.call('ZRANGE', KEYS[4], 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
  over = over - 1
end
local entry
if ARGV[9] ~= '' then
  entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'frame', ARGV[2], 'exp', ARGV[9])
else
  entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'frame', ARGV[2])
end
redis.call('HSET', KEYS[2], ARGV[1], entry .. '|' .. ARGV[5])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], ARGV[1]) end
if disposable then
  local dash = string.find(entry, '-', 1, true)
  local score = tonumber(string.sub(entry, 1, dash - 1)) * 1000 + tonumber(string.sub(entry, dash + 1))
  redis.call('ZADD', KEYS[4], score, ARGV[1])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return entry
"""
)
_ACK = (
    _FORGET
    + """
if forget(ARGV[1]) then return 1 end
return 0
"""
)
_WITHDRAW = (
    _FORGET
    + """
local cid = redis.call('HGET', KEYS[3], ARGV[1])
if not cid then return 0 end
forget(cid)
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""
)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_STREAM_PREFIX, _STREAM_SUFFIX = "dc:node:", ":commands"


def stream_key(node_id: str) -> str:
    return f"{_STREAM_PREFIX}{node_id}{_STREAM_SUFFIX}"


def index_key(node_id: str) -> str:
    return f"dc:node:{node_id}:command-ids"


def supersede_key(node_id: str) -> str:
    return f"dc:node:{node_id}:command-keys"


def disposable_key(node_id: str) -> str:
    return f"dc:node:{node_id}:disposable"


def _keys(node_id: str) -> list[str]:
    return [
        stream_key(node_id),
        index_key(node_id),
        supersede_key(node_id),
        disposable_key(node_id),
    ]


def _supersedes(event: str, data: dict[str, Any]) -> tuple[str, str]:
    """(this command's supersede key, another key it makes pointless)."""
    if event == "start_instance":
        return f"start:{data['rental_id']}", ""
    if event == "stop_instance":
        container = data.get("container_id") or ""
        return f"stop:{data['rental_id']}:{container}", f"start:{data['rental_id']}"
    if event == "drain_node":
        return "drain", ""
    return "", ""


def owner_key(node_id: str) -> str:
    return f"dc:node:{node_id}:conn"


def _client(client: redis.Redis | None) -> redis.Redis:
    return client if client is not None else get_redis()


def _node(node_id: uuid.UUID | str) -> str:
    return str(uuid.UUID(str(node_id)))


def send_to_node(
    node_id: uuid.UUID | str,
    event: str,
    data: dict[str, Any],
    *,
    client: redis.Redis | None = None,
    disposable: bool = False,
    expires_at: float | None = None,
) -> str:
    """Queue a command for the node's agent and return its id (the frame's ``id``).

    The data is validated against the protocol schema here, so a bad command fails in the
    caller, not on the host. Raises ValueError for an event that is not a command.
    `disposable`: a stop for a container the platform does not account for (dropped first when
    the stream is full); `expires_at` (epoch seconds): the pump drops the command after it.
    """
    if event not in COMMAND_EVENTS:
        raise ValueError(f"{event!r} is not a command to agents")
    node = _node(node_id)
    command_id = str(uuid.uuid4())
    frame = encode(event, data, id=command_id)
    own_key, other_key = _supersedes(event, data)
    r = _client(client)
    r.eval(
        _ADD,
        4,
        *_keys(node),
        command_id,
        frame,
        COMMANDS_CHANNEL,
        node,
        own_key,
        other_key,
        "1" if disposable else "0",
        get_settings().node_command_stream_max,
        "" if expires_at is None else repr(float(expires_at)),
    )
    return command_id


def send_after_commit(
    session: Session,
    node_id: uuid.UUID | str,
    event: str,
    data: dict[str, Any],
    *,
    disposable: bool = False,
    expires_at: float | None = None,
) -> None:
    """Queue a command for the node's agent once `session` commits (nothing if it rolls back).

    The data is checked against the protocol schema now, so a bad command fails in the caller.
    """
    if event not in COMMAND_EVENTS:
        raise ValueError(f"{event!r} is not a command to agents")
    encode(event, data)
    after_commit(
        session,
        functools.partial(
            send_to_node, node_id, event, data, disposable=disposable, expires_at=expires_at
        ),
        name=event,
    )


def ack(node_id: str, command_id: str, *, client: redis.Redis | None = None) -> bool:
    """The agent has taken the command: forget it. False when it was not (or no longer) queued."""
    r = _client(client)
    return bool(r.eval(_ACK, 4, *_keys(_node(node_id)), command_id))


@dataclass(frozen=True)
class Pending:
    entry_id: str
    frame: str
    command_id: str
    expires_at: float | None  # epoch seconds

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def withdraw_drain(node_id: uuid.UUID | str, *, client: redis.Redis | None = None) -> bool:
    """Forget a queued drain_node the agent has not taken (the node was undrained meanwhile)."""
    r = _client(client)
    return bool(r.eval(_WITHDRAW, 4, *_keys(_node(node_id)), "drain"))


def pending_entries(
    node_id: str, *, after: str | None = None, count: int = 100, client: redis.Redis | None = None
) -> list[Pending]:
    """Unacked commands, oldest first, after stream entry `after`."""
    r = _client(client)
    start = "-" if after is None else f"({after}"
    entries: list[tuple[str, dict[str, str]]] = r.xrange(  # type: ignore[assignment]
        stream_key(node_id), min=start, max="+", count=count
    )
    return [
        Pending(
            entry_id,
            fields["frame"],
            fields.get("id", ""),
            float(fields["exp"]) if fields.get("exp") else None,
        )
        for entry_id, fields in entries
    ]


def withdraw(node_id: str, command_id: str, *, client: redis.Redis | None = None) -> bool:
    """Take back a command that is no longer wanted (a logs request that timed out), so an
    agent that reconnects does not get it. False when the agent had taken it already."""
    return ack(node_id, command_id, client=client)


def pending(
    node_id: str, *, after: str | None = None, count: int = 100, client: redis.Redis | None = None
) -> list[tuple[str, str]]:
    """Unacked commands as (stream entry id, encoded frame), oldest first, after `after`."""
    return [
        (p.entry_id, p.frame)
        for p in pending_entries(node_id, after=after, count=count, client=client)
    ]


def pending_count(node_id: str, *, client: redis.Redis | None = None) -> int:
    return int(_client(client).xlen(stream_key(_node(node_id))))


def claim_connection(node_id: str, token: str, *, client: redis.Redis | None = None) -> None:
    """Make `token` the node's live connection; the holder of an older one closes it."""
    r = _client(client)
    pipe = r.pipeline(transaction=False)
    pipe.set(owner_key(node_id), token, ex=OWNER_TTL_SECONDS)
    pipe.publish(CONNECTIONS_CHANNEL, json.dumps({"node_id": node_id}))
    pipe.execute()


def release_connection(node_id: str, token: str, *, client: redis.Redis | None = None) -> None:
    """Drop the ownership record if it is still this connection's."""
    _client(client).eval(_RELEASE, 1, owner_key(node_id), token)


def connection_owner(node_id: str, *, client: redis.Redis | None = None) -> str | None:
    value = _client(client).get(owner_key(node_id))
    return str(value) if value is not None else None


def disconnect_node(node_id: uuid.UUID | str, *, client: redis.Redis | None = None) -> None:
    """Close the node's live connection wherever it is (its key was rotated)."""
    node = _node(node_id)
    r = _client(client)
    pipe = r.pipeline(transaction=False)
    pipe.delete(owner_key(node))
    pipe.publish(CONNECTIONS_CHANNEL, json.dumps({"node_id": node, "revoke": True}))
    pipe.execute()


def reconnect_node(node_id: uuid.UUID | str, *, client: redis.Redis | None = None) -> None:
    """Ask the node's agent to reconnect, wherever its connection is: its next `welcome` carries
    the node's current settings (draining) and its `hello` reports its containers again."""
    node = _node(node_id)
    _client(client).publish(CONNECTIONS_CHANNEL, json.dumps({"node_id": node, "reconnect": True}))


def reconnect_after_commit(session: Session, node_id: uuid.UUID | str) -> None:
    after_commit(session, functools.partial(reconnect_node, node_id), name="reconnect_node")


def oldest_pending(client: redis.Redis) -> tuple[str, float] | None:
    """The node whose oldest unacked command is the oldest of all, and when it was queued
    (epoch seconds); None when every command was acked. Acked entries are deleted, so each
    stream's first entry is its oldest unacked command."""
    streams = [
        raw.decode() if isinstance(raw, bytes) else str(raw)
        for raw in client.scan_iter(match=stream_key("*"), count=1000)
    ]
    if not streams:
        return None
    pipe = client.pipeline(transaction=False)
    for key in streams:
        pipe.xrange(key, "-", "+", count=1)
    oldest: tuple[str, float] | None = None
    for key, entries in zip(streams, pipe.execute(), strict=True):
        if not entries:
            continue
        entry_id = entries[0][0]
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        stamp = float(entry_id.split("-", 1)[0]) / 1000  # stream ids start with their time in ms
        if oldest is None or stamp < oldest[1]:
            oldest = (key[len(_STREAM_PREFIX) : -len(_STREAM_SUFFIX)], stamp)
    return oldest
