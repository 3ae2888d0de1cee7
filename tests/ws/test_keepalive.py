"""Agent sockets are pinged by one loop: each every PING_SECONDS, closed if the last ping got no
pong, and a closed socket wakes its handler at once (it waits for frames without a timeout)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from simple_websocket import ConnectionClosed, Server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from app.ws.connection import CLOSE_POLICY, PING_SECONDS, AgentConnection
from app.ws.keepalive import KeepAlive
from app.ws.registry import ConnectionRegistry


class Peer:
    """The agent's end of the socket, spoken with wsproto by hand (it answers pings on request)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        request = self.ws.send(Request(host="platform", target="/ws/agent")).decode()
        # The server side reads the upgrade request from its WSGI environ, not the socket.
        self.environ = {
            "HTTP_" + name.upper().replace("-", "_"): value
            for name, _, value in (line.partition(": ") for line in request.split("\r\n")[1:])
            if name
        }

    def accepted(self) -> None:
        assert isinstance(self.next_event(), AcceptConnection)

    def next_event(self, timeout: float = 5.0):
        self.sock.settimeout(timeout)
        while True:
            for event in self.ws.events():
                return event
            self.ws.receive_data(self.sock.recv(4096))

    def answer(self, event) -> None:
        self.sock.sendall(self.ws.send(event.response()))

    def say(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))


class NoRedis:
    """The registry's Redis is only used by attach and detach, which these tests do not call."""


@pytest.fixture
def pair():
    server_sock, peer_sock = socket.socketpair()
    made: list[Server] = []

    def _make() -> tuple[AgentConnection, Peer]:
        peer = Peer(peer_sock)
        ws = Server({"werkzeug.socket": server_sock, **peer.environ}, max_message_size=64 * 1024)
        made.append(ws)
        peer.accepted()
        conn = AgentConnection(ws, "node-1", draining=False, heartbeat_interval=5)
        return conn, peer

    yield _make
    for ws in made:
        ws.connected = False
    peer_sock.close()
    server_sock.close()


def _registry_of(conn: AgentConnection) -> ConnectionRegistry:
    registry = ConnectionRegistry(NoRedis())  # type: ignore[arg-type]
    registry.connections[conn.node_id] = conn
    return registry


def test_a_connection_is_first_pinged_ping_seconds_after_it_opened(pair):
    conn, peer = pair()
    keepalive = KeepAlive(_registry_of(conn), threading.Event())
    opened = time.monotonic()

    assert keepalive.tick(opened + 1) == 0
    assert keepalive.tick(conn.next_ping) == 1

    assert isinstance(peer.next_event(), Ping)
    assert conn.next_ping >= opened + 2 * PING_SECONDS - 1  # the next one, a period later


def test_an_answered_ping_keeps_the_connection_open(pair):
    conn, peer = pair()
    keepalive = KeepAlive(_registry_of(conn), threading.Event())
    for _ in range(3):
        keepalive.tick(conn.next_ping)
        peer.answer(peer.next_event())
        deadline = time.monotonic() + 5
        while not conn.ws.pong_received and time.monotonic() < deadline:
            time.sleep(0.01)
    assert conn.ws.pong_received and not conn.closed


def test_a_ping_left_unanswered_closes_the_connection_with_1008(pair):
    conn, peer = pair()
    keepalive = KeepAlive(_registry_of(conn), threading.Event())
    keepalive.tick(conn.next_ping)
    assert isinstance(peer.next_event(), Ping)  # and no pong

    keepalive.tick(conn.next_ping)

    closing = peer.next_event()
    assert isinstance(closing, CloseConnection)
    assert closing.code == CLOSE_POLICY and closing.reason == "Ping/Pong timeout"
    assert conn.closed


def test_closing_wakes_a_handler_waiting_for_frames(pair):
    conn, peer = pair()
    conn.ready = True  # past the hello: the handler waits for frames without a timeout
    peer.say("first")
    assert conn.ws.receive(timeout=5) == "first"
    outcome: list[object] = []

    def handler() -> None:
        try:
            outcome.append(conn.ws.receive())
        except ConnectionClosed:
            outcome.append("closed")

    waiting = threading.Thread(target=handler)
    waiting.start()
    time.sleep(0.1)
    conn.close(CLOSE_POLICY, "bye")
    waiting.join(5)
    assert outcome == ["closed"]
