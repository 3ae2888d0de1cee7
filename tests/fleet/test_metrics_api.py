"""GET /nodes/{id}/metrics: downsampled series from InfluxDB, for the owner and admins."""

from __future__ import annotations

import time

import pytest

from app.fleet.metrics import MetricsWriter, heartbeat_lines
from tests.fleet.agent_sim import METRICS
from tests.procs import wait_until


def _write(node_id: str, samples: list[tuple[int, dict]]) -> MetricsWriter:
    writer = MetricsWriter.from_settings()
    for at_ms, metrics in samples:
        writer.add(heartbeat_lines(node_id, at_ms, metrics))
    assert writer.flush() == sum(len(heartbeat_lines(node_id, a, m)) for a, m in samples)
    return writer


def test_metrics_endpoint_returns_the_means_of_what_was_written(client, node):
    now_ms = int(time.time() * 1000)
    # Two heartbeats in one bucket: the answer is their mean.
    first = {**METRICS, "cpu_temp": 50.0, "gpu_temp": [60.0, 70.0]}
    second = {**METRICS, "cpu_temp": 60.0, "gpu_temp": [62.0, 74.0]}
    writer = _write(str(node.id), [(now_ms - 2000, first), (now_ms - 1000, second)])
    assert writer.batches_written == 1

    response = client.get(
        f"/api/v1/nodes/{node.id}/metrics?since=10m&every=10m", headers=node.owner.headers
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["node_id"] == str(node.id) and body["every"] == "10m"
    # The two heartbeats may straddle a bucket edge: compare the means over all buckets.
    node_points = body["node"]
    assert sum(p["cpu_temp"] for p in node_points) / len(node_points) == pytest.approx(55.0)
    assert node_points[0]["ram_usage_mb"] == 4096.0
    gpus = {g["index"]: g["points"] for g in body["gpus"]}
    assert set(gpus) == {0, 1}
    assert sum(p["gpu_temp"] for p in gpus[1]) / len(gpus[1]) == pytest.approx(72.0)
    assert gpus[0][0]["gpu_power_w"] == 300.0
    assert node_points[0]["time"].endswith(("Z", "+00:00"))


def test_metrics_from_a_live_agent_reach_the_endpoint(client, agents, node):
    agent = agents(node).connect()
    agent.heartbeat()

    def series():
        body = client.get(
            f"/api/v1/nodes/{node.id}/metrics?since=5m&every=1m", headers=node.owner.headers
        ).json
        return body["node"] and body

    body = wait_until(series, 10, what="the heartbeat in the metrics series")
    assert body["node"][-1]["disk_usage_gb"] == METRICS["disk_usage_gb"]
    assert [g["index"] for g in body["gpus"]] == [0, 1]


def test_metrics_of_a_node_with_no_data_are_empty(client, node):
    body = client.get(f"/api/v1/nodes/{node.id}/metrics", headers=node.owner.headers).json
    assert body["node"] == [] and body["gpus"] == []
    assert body["since"] == "1h" and body["every"] == "60s"


def test_the_writer_creates_the_database_with_a_retention_policy(node, settings):
    from app.influx import InfluxClient

    _write(str(node.id), [(int(time.time() * 1000), METRICS)])
    body = InfluxClient.from_settings().query(
        f'SHOW RETENTION POLICIES ON "{settings.influxdb_database}"'
    )
    series = body["results"][0]["series"][0]
    policies = [dict(zip(series["columns"], row, strict=True)) for row in series["values"]]
    ours = next(p for p in policies if p["name"] == "dc_metrics")
    assert ours["default"] is True and ours["duration"] == "720h0m0s"


def test_metrics_of_another_hosts_node_are_not_found_but_admins_see_them(
    client, node, other_user, admin
):
    assert (
        client.get(f"/api/v1/nodes/{node.id}/metrics", headers=other_user.headers).status_code
        == 404
    )
    assert client.get(f"/api/v1/nodes/{node.id}/metrics").status_code == 401
    assert client.get(f"/api/v1/nodes/{node.id}/metrics", headers=admin.headers).status_code == 200


@pytest.mark.parametrize(
    "query, field",
    [
        ("since=forever", "since"),
        ("since=1y", "since"),
        ("since=0h", "since"),
        ("since=91d", "since"),
        ("since=1h&every=1s", "every"),
        ("since=1h&every=2h", "every"),
        ("since=7d&every=10s", "every"),
        ("since=1h&every=1m;DROP", "every"),
    ],
)
def test_bad_windows_are_refused_with_422_naming_the_parameter(client, node, query, field):
    response = client.get(f"/api/v1/nodes/{node.id}/metrics?{query}", headers=node.owner.headers)
    assert response.status_code == 422, response.json
    assert field in str(response.json["errors"])


def test_a_long_window_without_every_gets_about_300_buckets(client, node):
    body = client.get(f"/api/v1/nodes/{node.id}/metrics?since=7d", headers=node.owner.headers).json
    assert body["every"] == "2040s"
