"""GET /metrics: scraped from a real server, parsed with the Prometheus client's parser."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import requests
from prometheus_client.parser import text_string_to_metric_families

from app.db import utcnow
from app.enums import RentalStatus
from app.fleet.live import Sighting, write_sightings
from app.ops.actors import ping
from app.redis_client import get_redis
from app.rentals.models import Rental
from tests.ops import failing_actors as actors
from tests.ops.helpers import inspector, ops_worker
from tests.procs import ROOT, api_server, free_port, running, wait_http, wait_until


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_without_a_token_answer_only_on_loopback(client):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 404

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = _samples(response.get_data(as_text=True))
    assert _value(samples, "dc_metrics_source_up", source="broker") == 1


def test_a_scrape_with_the_token_reports_http_queue_worker_and_domain_metrics(
    db, node, register_node, user
):
    other_node = register_node(user)
    now = utcnow()
    db.add_all(
        [
            Rental(
                renter_id=user.id,
                node_id=node.id,
                status=RentalStatus.ACTIVE,
                image="busybox",
                cost_per_hour=Decimal("1.2000"),
                start_time=now - timedelta(minutes=10),
                billed_minutes=3,
            ),
            Rental(
                renter_id=user.id,
                node_id=node.id,
                status=RentalStatus.COMPLETED,
                image="busybox",
                cost_per_hour=Decimal("1.2000"),
                start_time=now - timedelta(hours=2),
                end_time=now - timedelta(hours=1),
                billed_minutes=60,
            ),
            Rental(
                renter_id=user.id,
                node_id=other_node.id,
                status=RentalStatus.PENDING,
                image="busybox",
                cost_per_hour=Decimal("2.0000"),
            ),
        ]
    )
    db.commit()
    client_redis = get_redis()
    write_sightings(client_redis, [Sighting(str(node.id), time.time(), "online")])
    # Five heartbeats as the socket server stores them (a hello, above, is not one).
    beat = Sighting(str(node.id), time.time(), "online", metrics={"cpu_temp": 50.0})
    write_sightings(client_redis, [beat] * 4)
    write_sightings(client_redis, [beat])

    # Real actor runs, recorded by the worker middleware: one ok, one dead-lettered.
    token = uuid.uuid4().hex
    with ops_worker():
        ping.send(token)
        actors.fail_until_fixed.send(token)
        wait_until(lambda: client_redis.get(f"dc:ping:{token}") == "pong", what="the ping run")
        wait_until(
            lambda: inspector().stats([actors.OPS_QUEUE])[0].dead == 1, what="the dead letter"
        )
    for number in range(3):
        actors.idle.send(number)

    port = free_port()
    metrics_token = f"scrape-{uuid.uuid4().hex}"
    base = f"http://127.0.0.1:{port}"
    request_id = f"test-{uuid.uuid4().hex}"
    with running(
        api_server(port, {"METRICS_TOKEN": metrics_token, "LOG_LEVEL": "INFO"}, name="ops-api")
    ) as (api,):
        wait_http(f"{base}/api/v1/health", proc=api)
        for _ in range(3):
            answer = requests.get(
                f"{base}/api/v1/health", headers={"X-Request-Id": request_id}, timeout=10
            )
            assert answer.headers["X-Request-Id"] == request_id
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        assert (
            requests.get(
                f"{base}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10
            ).status_code
            == 401
        )
        response = requests.get(
            f"{base}/metrics", timeout=10, headers={"Authorization": f"Bearer {metrics_token}"}
        )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(response.text)
    health = {"method": "GET", "endpoint": "/api/v1/health"}
    assert _value(samples, "dc_http_requests_total", status="200", **health) >= 3
    assert _value(samples, "dc_http_request_duration_seconds_count", **health) >= 3
    assert _value(samples, "dc_queue_depth", queue=actors.IDLE_QUEUE) == 3
    assert _value(samples, "dc_queue_dead_letters", queue=actors.OPS_QUEUE) == 1
    assert _value(samples, "dc_queue_in_flight", queue="system") == 0
    assert (
        _value(samples, "dc_actor_messages_total", actor="ping", queue="system", outcome="ok") == 1
    )
    assert (
        _value(
            samples,
            "dc_actor_messages_total",
            actor="fail_until_fixed",
            queue=actors.OPS_QUEUE,
            outcome="error",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "dc_actor_dead_lettered_total",
            actor="fail_until_fixed",
            queue=actors.OPS_QUEUE,
        )
        == 1
    )
    assert _value(samples, "dc_actor_duration_seconds_count", actor="ping", queue="system") == 1
    assert (
        _value(samples, "dc_actor_duration_seconds_bucket", actor="ping", queue="system", le="+Inf")
        == 1
    )
    assert _value(samples, "dc_agents_connected") == 1
    assert _value(samples, "dc_agent_heartbeats_total") == 5
    assert _value(samples, "dc_rentals", status="active") == 1
    assert _value(samples, "dc_rentals", status="completed") == 1
    assert _value(samples, "dc_rentals", status="pending") == 1
    assert _value(samples, "dc_nodes", status="offline") == 2
    assert 7 * 60 - 5 <= _value(samples, "dc_billing_lag_seconds") <= 7 * 60 + 60
    for source in ("broker", "actors", "agents", "jobs", "database"):
        assert _value(samples, "dc_metrics_source_up", source=source) == 1

    # The server wrote one JSON line per request, under the caller's request id.
    lines = [
        json.loads(line)
        for line in api.log_path.read_text().splitlines()
        if line.startswith("{") and request_id in line
    ]
    assert len(lines) == 3
    assert {
        (x["msg"], x["method"], x["path"], x["status"], x["correlation_id"]) for x in lines
    } == {("request", "GET", "/api/v1/health", 200, request_id)}
    assert all(x["duration_ms"] >= 0 and x["request_id"] == request_id for x in lines)


def test_every_metric_the_grafana_dashboard_queries_is_exposed(client):
    client.get("/api/v1/health")
    families = list(text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)))
    exposed = set()
    for family in families:
        exposed.add(family.name)
        exposed.update(sample.name for sample in family.samples)
        if family.type == "counter":
            exposed.add(family.name + "_total")
        if family.type == "histogram":
            exposed.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bdc_[a-z_]+", target["expr"])
    }

    assert queried and queried <= exposed, sorted(queried - exposed)
