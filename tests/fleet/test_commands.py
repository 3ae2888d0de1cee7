"""Durable commands: queued in Redis, delivered by whichever server holds the node's socket."""

from __future__ import annotations

import uuid

import pytest

from agent.protocol import ProtocolError
from app.fleet import commands
from tests.fleet.agent_sim import pending_besides_self_test
from tests.procs import api_server, free_port, running, wait_http

STOP = {"rental_id": "6f1c1f0e-4c4b-4b43-9a3e-0d7c0d6b2a10", "container_id": "c-9"}


def test_command_sent_while_disconnected_is_delivered_after_reconnect_exactly_once(agents, node):
    command_id = commands.send_to_node(node.id, "stop_instance", STOP)

    agent = agents(node).connect()
    frame = agent.recv_event("stop_instance")
    assert frame["id"] == command_id
    assert frame["data"]["rental_id"] == STOP["rental_id"]
    agent.ack(command_id)
    agent.send_raw("not json")  # frames are handled in order: the ack is done once this is
    assert agent.recv_event("error")["data"]["code"] == "invalid_json"
    assert [f for f in agent.received if f["event"] == "stop_instance"] == [frame]
    agent.close()

    again = agents(node).connect()
    assert [f for f in again.frames_within(1.5) if f["event"] == "stop_instance"] == []
    assert len(pending_besides_self_test(node.id)) == 0


def test_command_to_a_connected_agent_arrives_at_once(agents, node):
    agent = agents(node).connect()
    agent.frames_within(0.3)
    command_id = commands.send_to_node(node.id, "drain_node", {"node_id": str(node.id)})
    frame = agent.recv_event("drain_node", timeout=3)
    assert frame["id"] == command_id
    assert frame["data"] == {"node_id": str(node.id)}


def test_unacked_command_is_sent_again_after_reconnect_and_only_once_per_connection(agents, node):
    agent = agents(node).connect()
    command_id = commands.send_to_node(node.id, "stop_instance", STOP)
    assert agent.recv_event("stop_instance")["id"] == command_id
    assert [f for f in agent.frames_within(1.0) if f["event"] == "stop_instance"] == []
    agent.close()

    again = agents(node).connect()
    frames = [f for f in again.frames_within(1.5) if f["event"] == "stop_instance"]
    assert [f["id"] for f in frames] == [command_id]


def test_commands_arrive_in_the_order_they_were_sent(agents, node):
    ids = [
        commands.send_to_node(
            node.id, "stop_instance", {"rental_id": str(uuid.uuid4()), "container_id": f"c-{i}"}
        )
        for i in range(5)
    ]
    agent = agents(node).connect()
    received = [agent.recv_event("stop_instance")["id"] for _ in ids]
    assert received == ids


def test_commands_are_not_sent_before_the_agent_says_hello(agents, node):
    commands.send_to_node(node.id, "stop_instance", STOP)
    agent = agents(node).connect(hello=False)
    assert [f for f in agent.frames_within(0.8) if f["event"] == "stop_instance"] == []
    agent.hello()
    assert agent.recv_event("stop_instance")["data"]["container_id"] == "c-9"


def test_ack_of_an_unknown_command_changes_nothing(agents, node):
    command_id = commands.send_to_node(node.id, "stop_instance", STOP)
    agent = agents(node).connect()
    agent.recv_event("stop_instance")
    agent.ack(str(uuid.uuid4()))
    agent.send_raw("not json")  # answered only after the ack before it was handled
    assert agent.recv_event("error")["data"]["code"] == "invalid_json"
    assert len(pending_besides_self_test(node.id)) == 1
    assert commands.ack(str(node.id), command_id) is True
    assert len(pending_besides_self_test(node.id)) == 0


def test_send_to_node_refuses_invalid_commands(node):
    with pytest.raises(ProtocolError):
        commands.send_to_node(node.id, "stop_instance", {"rental_id": "not-a-uuid"})
    with pytest.raises(ProtocolError):
        commands.send_to_node(
            node.id, "start_instance", {"rental_id": str(uuid.uuid4()), "image": "Bad Image!"}
        )
    with pytest.raises(ValueError):
        commands.send_to_node(node.id, "error", {"code": "x", "message": "y"})
    assert len(pending_besides_self_test(node.id)) == 0


def test_a_command_reaches_the_agent_on_another_server_process(agents, node, fleet_server):
    """Two socket servers behind one Redis: the one holding the socket delivers."""
    port = free_port()
    with running(api_server(port, name="fleet-api-2")) as (proc,):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        first = agents(node).connect()  # on the shared server
        second = agents(node, base_url=f"http://127.0.0.1:{port}").connect()
        code, _ = first.wait_closed()
        assert code == 4000  # the older connection, on the other process, was replaced

        command_id = commands.send_to_node(node.id, "stop_instance", STOP)
        assert second.recv_event("stop_instance", timeout=5)["id"] == command_id
        second.ack(command_id)
        second.close()
    assert len(pending_besides_self_test(node.id)) == 0
