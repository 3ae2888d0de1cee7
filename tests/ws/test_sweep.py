"""The pump's sweep, one script call per chunk: it sends what a missed message left queued,
closes connections replaced elsewhere or made with a revoked key, and restores a lost record."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import select

from app.auth.node_keys import dead_key_ids, issue_key
from app.db import session_scope
from app.fleet import commands
from app.fleet.models import NodeApiKey
from app.redis_client import get_redis
from app.ws.connection import CLOSE_REPLACED, CLOSE_REVOKED, AgentConnection
from app.ws.pump import CommandPump
from app.ws.registry import ConnectionRegistry

STOP = {"rental_id": str(uuid.uuid4()), "container_id": "c-1"}


class Socket:
    """Stands in for the agent's WebSocket: keeps what is sent and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.event = threading.Event()
        self.connected = True

    def send(self, frame: str) -> None:
        self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def _key_id(node_id: uuid.UUID) -> str:
    with session_scope() as session:
        return str(
            session.execute(
                select(NodeApiKey.id).where(
                    NodeApiKey.node_id == node_id, NodeApiKey.revoked_at.is_(None)
                )
            ).scalar_one()
        )


@pytest.fixture
def pump(app):
    registry = ConnectionRegistry(get_redis())
    pump = CommandPump(get_redis(), registry, threading.Event())

    def _attach(node_id: uuid.UUID, *, ready: bool = True) -> AgentConnection:
        conn = AgentConnection(
            Socket(),
            str(node_id),
            draining=False,
            heartbeat_interval=5,
            key_id=_key_id(node_id),
        )
        conn.ready = ready
        registry.attach(conn)
        return conn

    pump.attach = _attach  # type: ignore[attr-defined]
    return pump


def _sent_events(conn: AgentConnection, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while not conn.ws.sent and time.monotonic() < deadline:
        time.sleep(0.02)
    return [frame for frame in conn.ws.sent if '"stop_instance"' in frame]


def test_a_command_whose_message_was_missed_is_sent_by_the_sweep(pump, node):
    conn = pump.attach(node.id)
    command_id = commands.send_to_node(node.id, "stop_instance", STOP)  # nobody listens

    pump.sweep()

    sent = _sent_events(conn)
    assert len(sent) == 1 and command_id in sent[0]
    assert conn.ws.closed_with is None


def test_nothing_is_sent_to_an_agent_that_has_not_said_hello(pump, node):
    conn = pump.attach(node.id, ready=False)
    commands.send_to_node(node.id, "stop_instance", STOP)
    pump.sweep()
    time.sleep(0.3)
    assert conn.ws.sent == [] and conn.ws.closed_with is None


def test_a_connection_claimed_elsewhere_is_closed_as_replaced(pump, node):
    conn = pump.attach(node.id)
    get_redis().set(commands.owner_key(str(node.id)), "another-process-token")

    pump.sweep()

    assert conn.ws.closed_with == (CLOSE_REPLACED, "replaced by a newer connection")


def test_a_lost_connection_record_is_restored_for_the_connection_that_stands(pump, node):
    conn = pump.attach(node.id)
    get_redis().delete(commands.owner_key(str(node.id)))

    pump.sweep()

    assert get_redis().get(commands.owner_key(str(node.id))) == conn.token
    assert get_redis().ttl(commands.owner_key(str(node.id))) > 0
    assert conn.ws.closed_with is None


def test_a_connection_made_with_a_revoked_key_is_closed(pump, node):
    conn = pump.attach(node.id)
    with session_scope() as session:
        issue_key(session, node_id=node.id)  # rotated without telling the socket servers

    pump.sweep()

    assert conn.ws.closed_with == (CLOSE_REVOKED, "the node's API key was rotated")


def test_the_sweep_covers_connections_beyond_its_first_chunk(
    pump, register_node, user, monkeypatch
):
    monkeypatch.setattr("app.ws.pump.SWEEP_CHUNK", 2)
    nodes = [register_node(user) for _ in range(5)]
    conns = [pump.attach(n.id) for n in nodes]
    for n in nodes:
        commands.send_to_node(n.id, "stop_instance", STOP)
    get_redis().set(commands.owner_key(str(nodes[4].id)), "another-process-token")

    pump.sweep()

    assert all(_sent_events(conn) for conn in conns[:4])
    assert conns[4].ws.closed_with == (CLOSE_REPLACED, "replaced by a newer connection")


def test_dead_key_ids_are_the_revoked_and_the_unknown_ones(app, node):
    live = _key_id(node.id)
    unknown = str(uuid.uuid4())
    with session_scope() as session:
        assert dead_key_ids(session, [live, unknown]) == {unknown}
        assert dead_key_ids(session, []) == set()
        issue_key(session, node_id=node.id)
        session.flush()
        assert dead_key_ids(session, [live, unknown]) == {live, unknown}
