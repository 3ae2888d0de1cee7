"""The heartbeat's hot path, written by hand, says what the libraries it replaced said."""

from __future__ import annotations

import json
import math
import random
import uuid

from influxdb_client import Point
from influxdb_client.domain.write_precision import WritePrecision

from agent.protocol import ProtocolError, decode_from_agent
from app.fleet.metrics import GPU_FIELDS, MEASUREMENT, NODE_FIELDS, heartbeat_lines
from tests.fleet.agent_sim import METRICS


def _point_lines(node_id: str, at_ms: int, metrics: dict) -> list[str]:
    """influxdb-client's Point, as heartbeat_lines used to build its lines."""
    lines = []
    node = Point(MEASUREMENT).tag("node_id", node_id).time(at_ms, WritePrecision.MS)
    if any(metrics.get(n) is not None for n in NODE_FIELDS):
        for name in NODE_FIELDS:
            if metrics.get(name) is not None:
                node.field(name, float(metrics[name]))
        lines.append(node.to_line_protocol())
    count = max((len(metrics.get(n) or ()) for n in GPU_FIELDS), default=0)
    for index in range(count):
        point = (
            Point(MEASUREMENT)
            .tag("node_id", node_id)
            .tag("gpu", str(index))
            .time(at_ms, WritePrecision.MS)
        )
        fields = 0
        for name in GPU_FIELDS:
            values = metrics.get(name) or ()
            if index < len(values) and values[index] is not None:
                point.field(name, float(values[index]))
                fields += 1
        if fields:
            lines.append(point.to_line_protocol())
    return lines


def test_heartbeat_lines_are_the_lines_influxdb_client_writes():
    rng = random.Random(12)
    numbers = [0, 1, 1.5, 100.0, 63.25, 1e-7, 123456789.125, 1e21, 4096.0, None]
    for _ in range(2000):
        metrics = {name: rng.choice(numbers) for name in NODE_FIELDS if rng.random() < 0.8} | {
            name: [rng.choice(numbers) for _ in range(rng.randint(0, 4))]
            for name in GPU_FIELDS
            if rng.random() < 0.8
        }
        node_id = rng.choice([str(uuid.uuid4()), "odd node,id=x y\\"])
        at_ms = rng.randint(0, 2**42)
        assert heartbeat_lines(node_id, at_ms, metrics) == _point_lines(node_id, at_ms, metrics)


def test_heartbeat_lines_leave_out_what_is_not_finite():
    metrics = {**METRICS, "cpu_temp": math.inf, "gpu_temp": [math.nan, 60.0]}
    assert heartbeat_lines("n", 1, metrics) == _point_lines("n", 1, metrics)


def _frame(data: dict, **envelope) -> str:
    return json.dumps({"event": "heartbeat", "data": data, **envelope})


def test_a_heartbeat_decodes_to_what_the_marshmallow_schema_loads():
    from agent.protocol import _SCHEMAS

    node_id = str(uuid.uuid4())
    data = {
        "node_id": node_id.upper(),
        "status": "busy",
        "metrics": {"ram_usage_mb": 1, "disk_usage_gb": 2},
    }
    message = decode_from_agent(_frame(data, id="hb-1"))
    assert message.data == _SCHEMAS["heartbeat"].load(data)
    assert message.data["node_id"] == node_id
    assert message.id == "hb-1" and message.v == 1


def test_heartbeats_the_schema_refuses_are_refused_with_its_errors():
    node_id = str(uuid.uuid4())
    bad = [
        {"node_id": "not-a-uuid", "status": "online", "metrics": METRICS},
        {"node_id": node_id, "status": "offline", "metrics": METRICS},
        {"node_id": node_id, "status": "online", "metrics": {**METRICS, "cpu_temp": 1e400}},
        {"node_id": node_id, "status": "online", "metrics": {**METRICS, "gpu_temp": [None]}},
        {"node_id": node_id, "status": "online", "metrics": {**METRICS, "ram_usage_mb": -1}},
        {"node_id": node_id, "status": "online", "metrics": {"ram_usage_mb": 1}},
    ]
    for data in bad:
        try:
            decode_from_agent(_frame(data, id="hb-2"))
        except ProtocolError as exc:
            assert exc.code == "invalid_data" and exc.frame_id == "hb-2" and exc.errors
        else:
            raise AssertionError(f"accepted {data}")
    # Numbers as strings are the schema's to judge (it accepts them): the same answer as before.
    loose = {"node_id": node_id, "status": "online", "metrics": {**METRICS, "cpu_temp": "55"}}
    assert decode_from_agent(_frame(loose)).data["metrics"]["cpu_temp"] == 55.0
