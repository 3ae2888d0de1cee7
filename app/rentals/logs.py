"""A rental's output: asked of its agent while it runs, kept (its last 64 KiB) once it ends.

While the container may run, GET /rentals/{id}/logs sends `fetch_logs` down the node's command
stream and waits on a Redis list for the agent's `logs` frames, which the socket server pushes
there (:func:`deliver`) only for a request that is awaited, from the node it was sent to, for that
rental. Whatever the agent sends, the answer is cut to the requested tail and MAX_LOG_BYTES.

When the container stops, the agent sends its last 64 KiB as `logs` frames with request_id
"final"; :func:`store_final` keeps them (bounded) in rental_final_logs for after the end.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from agent.protocol import MAX_LOG_BYTES
from app.errors import GatewayTimeout
from app.fleet import commands
from app.redis_client import get_redis
from app.rentals.models import Rental, RentalFinalLogs

FINAL = "final"  # the request_id of the frames a stopping container leaves
MAX_LINE_BYTES = 16 * 1024  # a longer line is cut (the answer is one JSON document)
MAX_CHUNKS = 16  # frames kept per request; a legitimate answer of 64 KiB needs two or three
# An agent that keeps sending is cut off here, well before its frames could cost memory.
MAX_COLLECTED_BYTES = 2 * MAX_LOG_BYTES
# Kept per rental after it ends: the agent's 64 KiB, plus room for how it splits lines.
FINAL_MAX_BYTES = MAX_LOG_BYTES + 8 * 1024
FINAL_MAX_CHUNKS = 64

_DELIVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
"""


def _want_key(request_id: str) -> str:
    return f"dc:rental-logs:{request_id}:want"


def _chunks_key(request_id: str) -> str:
    return f"dc:rental-logs:{request_id}:chunks"


def _owner(node_id: uuid.UUID | str, rental_id: uuid.UUID | str) -> str:
    return f"{uuid.UUID(str(node_id))} {uuid.UUID(str(rental_id))}"


# ---------------------------------------------------------------- bounds
def _cut_line(line: str) -> str:
    data = line.encode()
    if len(data) <= MAX_LINE_BYTES:
        return line
    return data[:MAX_LINE_BYTES].decode(errors="ignore")


def bound(lines: list[str], *, tail: int, max_bytes: int = MAX_LOG_BYTES) -> tuple[list[str], bool]:
    """The last `tail` lines that fit in `max_bytes` (each line counted with its newline), and
    whether anything was left out."""
    cut = len(lines) > tail
    kept: list[str] = []
    total = 0
    for raw in reversed(lines[-tail:]):
        line = _cut_line(raw)
        cut = cut or line != raw
        size = len(line.encode()) + 1
        if total + size > max_bytes:
            cut = True
            break
        kept.append(line)
        total += size
    kept.reverse()
    return kept, cut


# ---------------------------------------------------------------- live: ask the agent
def fetch_live(
    node_id: uuid.UUID,
    rental_id: uuid.UUID,
    *,
    tail: int,
    timeout: float,
    client: redis.Redis | None = None,
) -> tuple[list[str], bool]:
    """Ask the node's agent for the rental's output and wait up to `timeout` seconds.

    Raises GatewayTimeout when the node is not connected or does not answer in time. Blocks
    in Redis (BLPOP), so under gevent it only holds its own greenlet.
    """
    r = client if client is not None else get_redis()
    if commands.connection_owner(str(node_id), client=r) is None:
        raise GatewayTimeout("The node is not connected: the rental's logs cannot be read now.")
    request_id = uuid.uuid4().hex
    ttl = math.ceil(timeout) + 5
    r.set(_want_key(request_id), _owner(node_id, rental_id), ex=ttl)
    command_id = commands.send_to_node(
        node_id,
        "fetch_logs",
        {
            "request_id": request_id,
            "rental_id": str(rental_id),
            "tail": tail,
            "max_bytes": MAX_LOG_BYTES,
        },
        client=r,
    )
    try:
        return _collect(r, request_id, tail=tail, deadline=time.monotonic() + timeout)
    finally:
        pipe = r.pipeline(transaction=False)
        pipe.delete(_want_key(request_id), _chunks_key(request_id))
        pipe.execute()
        # Not answered in time: an agent that reconnects later must not get it again.
        commands.withdraw(str(node_id), command_id, client=r)


def _collect(
    r: redis.Redis, request_id: str, *, tail: int, deadline: float
) -> tuple[list[str], bool]:
    chunks: dict[int, list[str]] = {}
    truncated = False
    collected = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GatewayTimeout("The node did not send the rental's logs in time.")
        popped = r.blpop([_chunks_key(request_id)], timeout=max(0.01, left))
        if popped is None:
            continue
        chunk = json.loads(popped[1])
        chunks.setdefault(int(chunk["seq"]), list(chunk["lines"]))
        truncated = truncated or bool(chunk["truncated"])
        collected += sum(len(line) for line in chunk["lines"])
        if chunk["last"] or collected > MAX_COLLECTED_BYTES or len(chunks) >= MAX_CHUNKS:
            if not chunk["last"]:
                truncated = True  # an agent that does not stop is cut off
            break
    lines = [line for seq in sorted(chunks) for line in chunks[seq]]
    kept, cut = bound(lines, tail=tail)
    return kept, truncated or cut


def deliver(r: redis.Redis, node_id: str, data: dict[str, Any]) -> bool:
    """A `logs` frame from the socket: queue it for the request that waits for it.

    False (and nothing stored) when no request waits for it from this node and rental, or the
    request has all the frames it takes.
    """
    request_id = data["request_id"]
    chunk = json.dumps(
        {
            "lines": data["lines"],
            "truncated": data["truncated"],
            "seq": data["seq"],
            "last": data["last"],
        }
    )
    stored = r.eval(
        _DELIVER,
        2,
        _want_key(request_id),
        _chunks_key(request_id),
        _owner(node_id, data["rental_id"]),
        chunk,
        MAX_CHUNKS,
        60,
    )
    return bool(stored == 1)


# ---------------------------------------------------------------- after the end: kept
def store_final(
    session: Session,
    *,
    node_id: str,
    rental_id: str,
    lines: list[str],
    truncated: bool,
    seq: int,
) -> None:
    """Keep one `final` frame of a rental's output, within FINAL_MAX_BYTES per rental.

    The caller holds no lock; the rental's row lock orders the chunks' size accounting. A
    repeated frame (same seq) changes nothing.
    """
    rental = session.execute(
        select(Rental).where(Rental.id == uuid.UUID(rental_id)).with_for_update()
    ).scalar_one_or_none()
    if rental is None or str(rental.node_id) != str(node_id) or seq >= FINAL_MAX_CHUNKS:
        return
    used = session.execute(
        select(func.coalesce(func.sum(RentalFinalLogs.size), 0)).where(
            RentalFinalLogs.rental_id == rental.id
        )
    ).scalar_one()
    kept: list[str] = []
    size = 0
    for raw in lines:
        line = _cut_line(raw)
        line_size = len(line.encode()) + 1
        if used + size + line_size > FINAL_MAX_BYTES:
            truncated = True
            break
        truncated = truncated or line != raw
        kept.append(line)
        size += line_size
    session.execute(
        insert(RentalFinalLogs)
        .values(rental_id=rental.id, seq=seq, lines=kept, size=size, truncated=truncated)
        .on_conflict_do_nothing()
    )


def final_lines(session: Session, rental_id: uuid.UUID, *, tail: int) -> tuple[list[str], bool]:
    """What the rental's container left when it stopped, cut to `tail` lines and MAX_LOG_BYTES."""
    rows = session.execute(
        select(RentalFinalLogs.lines, RentalFinalLogs.truncated)
        .where(RentalFinalLogs.rental_id == rental_id)
        .order_by(RentalFinalLogs.seq)
    ).all()
    lines = [line for row in rows for line in row.lines]
    kept, cut = bound(lines, tail=tail)
    return kept, cut or any(row.truncated for row in rows)
