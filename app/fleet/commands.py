"""Durable commands to agents, and who holds each node's socket.

A command is appended to the node's Redis Stream (``dc:node:<id>:commands``) and announced on one
channel; whichever socket-server process holds that node's connection reads the stream and sends
the frame with its ``id``. The agent's ``ack`` deletes the entry; whatever is still in the stream
when an agent (re)connects is sent again. Nothing lives in a process's memory, so any number of
socket servers can run behind a load balancer and a worker may send to a node that is offline.

Connection ownership: ``dc:node:<id>:conn`` holds the token of the node's newest connection. A
process whose connection's token is no longer there closes it (one live connection per node).
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

import redis
from sqlalchemy.orm import Session

from agent.protocol import encode
from app.db import after_commit
from app.redis_client import get_redis

COMMAND_EVENTS = frozenset({"start_instance", "stop_instance", "drain_node", "self_test"})
COMMANDS_CHANNEL = "dc:fleet:commands"  # message: a node id whose stream has a new entry
CONNECTIONS_CHANNEL = "dc:fleet:connections"  # message: {"node_id", "revoke"?}
OWNER_TTL_SECONDS = 7 * 24 * 3600

_ADD = """
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'frame', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], entry)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return entry
"""
_ACK = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then return 0 end
redis.call('XDEL', KEYS[1], entry)
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_STREAM_PREFIX, _STREAM_SUFFIX = "dc:node:", ":commands"


def stream_key(node_id: str) -> str:
    return f"{_STREAM_PREFIX}{node_id}{_STREAM_SUFFIX}"


def index_key(node_id: str) -> str:
    return f"dc:node:{node_id}:command-ids"


def owner_key(node_id: str) -> str:
    return f"dc:node:{node_id}:conn"


def _client(client: redis.Redis | None) -> redis.Redis:
    return client if client is not None else get_redis()


def _node(node_id: uuid.UUID | str) -> str:
    return str(uuid.UUID(str(node_id)))


def send_to_node(
    node_id: uuid.UUID | str, event: str, data: dict[str, Any], *, client: redis.Redis | None = None
) -> str:
    """Queue a command for the node's agent and return its id (the frame's ``id``).

    The data is validated against the protocol schema here, so a bad command fails in the
    caller, not on the host. Raises ValueError for an event that is not a command.
    """
    if event not in COMMAND_EVENTS:
        raise ValueError(f"{event!r} is not a command to agents")
    node = _node(node_id)
    command_id = str(uuid.uuid4())
    frame = encode(event, data, id=command_id)
    r = _client(client)
    r.eval(_ADD, 2, stream_key(node), index_key(node), command_id, frame, COMMANDS_CHANNEL, node)
    return command_id


def send_after_commit(
    session: Session, node_id: uuid.UUID | str, event: str, data: dict[str, Any]
) -> None:
    """Queue a command for the node's agent once `session` commits (nothing if it rolls back).

    The data is checked against the protocol schema now, so a bad command fails in the caller.
    """
    if event not in COMMAND_EVENTS:
        raise ValueError(f"{event!r} is not a command to agents")
    encode(event, data)
    after_commit(session, functools.partial(send_to_node, node_id, event, data), name=event)


def ack(node_id: str, command_id: str, *, client: redis.Redis | None = None) -> bool:
    """The agent has taken the command: forget it. False when it was not (or no longer) queued."""
    r = _client(client)
    return bool(r.eval(_ACK, 2, stream_key(node_id), index_key(node_id), command_id))


def pending(
    node_id: str, *, after: str | None = None, count: int = 100, client: redis.Redis | None = None
) -> list[tuple[str, str]]:
    """Unacked commands as (stream entry id, encoded frame), oldest first, after `after`."""
    r = _client(client)
    start = "-" if after is None else f"({after}"
    entries: list[tuple[str, dict[str, str]]] = r.xrange(  # type: ignore[assignment]
        stream_key(node_id), min=start, max="+", count=count
    )
    return [(entry_id, fields["frame"]) for entry_id, fields in entries]


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
