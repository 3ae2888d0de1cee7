"""What an agent sends: heartbeats to Redis and InfluxDB, events to actors, bad frames refused."""

from __future__ import annotations

import json
import time
import uuid

import websocket

from app.fleet import live
from app.fleet.metrics import MEASUREMENT
from app.influx import InfluxClient
from app.redis_client import get_redis
from tests.fleet.agent_sim import METRICS
from tests.fleet.conftest import queued_messages
from tests.procs import wait_until


def _influx_rows(node_id: str) -> list[dict]:
    body = InfluxClient.from_settings().query(
        f'SELECT * FROM "{MEASUREMENT}" WHERE "node_id" = $node AND time > now() - 10m',
        params={"node": node_id},
    )
    rows = []
    for series in body["results"][0].get("series", []):
        rows += [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]
    return rows


def test_heartbeat_reaches_redis_and_influxdb(agents, node):
    agent = agents(node).connect()
    sent_at = time.time()
    agent.heartbeat()

    live_hash = wait_until(
        lambda: (
            get_redis().hgetall(live.live_key(str(node.id))).get("status")
            and get_redis().hgetall(live.live_key(str(node.id)))
        ),
        5,
        what="the live hash",
    )
    assert live_hash["status"] == "online"
    assert abs(int(live_hash["last_seen"]) - sent_at) < 5
    assert live_hash["gpu_temp_max"] == "63"
    assert live_hash["gpu_util_avg"] == "85"
    assert live_hash["ram_usage_mb"] == "4096"
    assert live.last_seen(get_redis(), str(node.id)) is not None
    # Counted for the ops heartbeats/s figure; the hello before it is not a heartbeat.
    assert get_redis().get(live.HEARTBEATS_COUNTER) == "1"

    rows = wait_until(
        lambda: len(_influx_rows(str(node.id))) >= 3 and _influx_rows(str(node.id)),
        10,
        what="points in InfluxDB",
    )
    node_rows = [r for r in rows if r["gpu"] is None]
    gpu_rows = {r["gpu"]: r for r in rows if r["gpu"] is not None}
    assert len(node_rows) == 1 and node_rows[0]["cpu_temp"] == METRICS["cpu_temp"]
    assert node_rows[0]["disk_usage_gb"] == METRICS["disk_usage_gb"]
    assert set(gpu_rows) == {"0", "1"}
    assert gpu_rows["1"]["gpu_temp"] == 63.0 and gpu_rows["1"]["gpu_power_w"] == 310.0
    assert gpu_rows["0"]["gpu_utilization"] == 90.0


def test_heartbeat_for_another_node_gets_an_error_and_stores_nothing(agents, node):
    agent = agents(node).connect()
    other = str(uuid.uuid4())
    agent.send("heartbeat", {"node_id": other, "status": "online", "metrics": METRICS}, id="hb-1")
    error = agent.recv_event("error")
    assert error["data"]["code"] == "wrong_node"
    assert error["data"]["id"] == "hb-1"
    assert get_redis().exists(live.live_key(other)) == 0
    assert get_redis().hget(live.live_key(str(node.id)), "status") is None
    assert live.last_seen(get_redis(), other) is None


def test_malformed_frames_get_error_frames_and_the_connection_stays_up(agents, node):
    agent = agents(node).connect()
    cases = [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (json.dumps({"data": {}}), "invalid_frame"),
        (json.dumps({"event": "reboot", "data": {}}), "unknown_event"),
        (
            json.dumps(
                {
                    "event": "heartbeat",
                    "data": {
                        "node_id": str(node.id),
                        "status": "online",
                        "metrics": {"ram_usage_mb": "lots", "disk_usage_gb": 1},
                    },
                }
            ),
            "invalid_data",
        ),
        (json.dumps({"event": "heartbeat", "data": {"node_id": 7}}), "invalid_data"),
        (json.dumps({"event": "instance_started", "data": {"rental_id": "nope"}}), "invalid_data"),
    ]
    for raw, code in cases:
        agent.send_raw(raw)
        error = agent.recv_event("error")
        assert error["data"]["code"] == code, (raw, error)

    agent.heartbeat()  # still connected, still served
    wait_until(
        lambda: get_redis().hget(live.live_key(str(node.id)), "status") == "online",
        5,
        what="a heartbeat after the bad frames",
    )
    assert get_redis().hget(live.live_key(str(node.id)), "ram_usage_mb") == "4096"


def test_an_oversized_frame_closes_only_that_connection(agents, node, other_user, register_node):
    bystander_node = register_node(other_user)
    bystander = agents(bystander_node).connect()
    agent = agents(node).connect()
    try:
        agent.send_raw("{" * 200_000)
        code, _ = agent.wait_closed()
    except (ConnectionError, websocket.WebSocketConnectionClosedException):
        code = 1009  # the server closed while the frame was still arriving: a reset
    assert code == 1009

    bystander.heartbeat()
    wait_until(
        lambda: get_redis().hget(live.live_key(str(bystander_node.id)), "status"),
        5,
        what="the other agent still served",
    )
    assert agents(node).connect().welcome is not None


def test_frames_before_hello_are_refused(agents, node):
    agent = agents(node).connect(hello=False)
    agent.heartbeat()
    assert agent.recv_event("error")["data"]["code"] == "hello_expected"
    agent.hello()
    agent.heartbeat()
    wait_until(
        lambda: get_redis().hget(live.live_key(str(node.id)), "status") == "online",
        5,
        what="the heartbeat after hello",
    )


def test_a_flood_of_frames_is_rate_limited_then_closed(agents, node):
    agent = agents(node).connect()
    for _ in range(140):  # the burst allowance, then refusals
        agent.heartbeat()
    code = reason = None
    for _ in range(500):  # keep flooding, but stop once the server hangs up
        agent.heartbeat()
        try:
            code, reason = agent.wait_closed(timeout=0.01)
            break
        except TimeoutError:
            continue

    assert code == 1008 and reason is not None and "too many" in reason
    codes = [f["data"]["code"] for f in agent.received if f["event"] == "error"]
    assert "rate_limited" in codes
    # The first heartbeats within the burst allowance were taken.
    wait_until(
        lambda: get_redis().hget(live.live_key(str(node.id)), "status") == "online",
        5,
        what="the heartbeats within the burst",
    )
    fresh = agents(node).connect()
    assert fresh.welcome is not None


def test_instance_events_are_handed_to_the_rental_actors(agents, node):
    rental_id = str(uuid.uuid4())
    agent = agents(node).connect()
    agent.send("instance_started", {"rental_id": rental_id, "container_id": "c-1"})
    agent.send("instance_failed", {"rental_id": rental_id, "reason": "image not found"})
    agent.send(
        "instance_stopped", {"rental_id": rental_id, "container_id": "c-1", "exit_code": 137}
    )

    def by_actor() -> dict[str, dict]:
        return {m["actor_name"]: m["kwargs"] for m in queued_messages("rentals")}

    messages = wait_until(lambda: len(by_actor()) == 3 and by_actor(), 5, what="rental messages")
    node_id = str(node.id)
    assert messages["on_instance_started"] == {
        "node_id": node_id,
        "rental_id": rental_id,
        "container_id": "c-1",
    }
    assert messages["on_instance_failed"] == {
        "node_id": node_id,
        "rental_id": rental_id,
        "reason": "image not found",
        "failure_code": None,  # an agent that sends no code
    }
    assert messages["on_instance_stopped"] == {
        "node_id": node_id,
        "rental_id": rental_id,
        "container_id": "c-1",
        "exit_code": 137,
    }


def test_second_connection_for_a_node_replaces_the_first(agents, node):
    first = agents(node).connect()
    second = agents(node).connect()

    code, reason = first.wait_closed()
    assert code == 4000 and "replaced" in reason
    second.heartbeat()
    wait_until(
        lambda: get_redis().hget(live.live_key(str(node.id)), "status") == "online",
        5,
        what="the second connection's heartbeat",
    )


def test_server_shutdown_closes_agent_sockets_at_once_and_keeps_their_heartbeats(agents, node):
    from tests.procs import api_server, free_port, wait_http

    port = free_port()
    proc = api_server(port, {"METRICS_FLUSH_SECONDS": "30"}, name="fleet-api-shutdown").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        agent = agents(node, base_url=f"http://127.0.0.1:{port}").connect()
        agent.heartbeat()
        wait_until(
            lambda: get_redis().hget(live.live_key(str(node.id)), "status"),
            5,
            what="the heartbeat stored",
        )
        started = time.monotonic()
        proc.stop(timeout=15)
        code, _ = agent.wait_closed(timeout=1)
        assert code == 1001
        assert time.monotonic() - started < 5  # not the 10 s graceful timeout
    finally:
        proc.stop()
    # Buffered metrics were written on the way out, not lost with the process.
    wait_until(lambda: _influx_rows(str(node.id)), 5, what="metrics flushed at shutdown")


def test_every_agent_event_actor_takes_exactly_the_fields_of_its_event():
    import inspect

    from agent import protocol
    from app.ws.dispatch import AGENT_EVENT_ACTORS

    for event, actor in AGENT_EVENT_ACTORS.items():
        schema = protocol.AGENT_EVENTS[event]
        parameters = list(inspect.signature(actor.fn).parameters)
        assert parameters[0] == "node_id", event
        assert set(parameters[1:]) == set(schema().fields), event
