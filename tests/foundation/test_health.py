"""GET /api/v1/health: 200 when PostgreSQL, Redis and InfluxDB answer; 503 naming the one that fails."""

from __future__ import annotations

import pytest

from tests.foundation.helpers import app_with
from tests.procs import free_port


def test_health_is_200_with_every_check_ok(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "influxdb": "ok"},
    }


@pytest.mark.parametrize(
    ("variable", "url", "failing"),
    [
        ("INFLUXDB_URL", "http://127.0.0.1:{port}", "influxdb"),
        ("REDIS_URL", "redis://127.0.0.1:{port}/0", "redis"),
    ],
)
def test_health_is_503_naming_the_dependency_that_is_down(variable, url, failing):
    closed_port = free_port()  # bound and released: nothing listens there
    client = app_with(**{variable: url.format(port=closed_port)}).test_client()
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "unavailable"
    assert body["failing"] == [failing]
    assert body["checks"][failing].startswith("error")
    others = {"database", "redis", "influxdb"} - {failing}
    assert all(body["checks"][name] == "ok" for name in others)


def test_health_needs_no_token_and_is_json(client):
    response = client.get("/api/v1/health", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"


def test_health_is_503_naming_the_database_when_postgresql_is_down(settings):
    from app import db

    closed_port = free_port()
    try:
        # create_app points the process-wide engine at the given DATABASE_URL.
        client = app_with(
            DATABASE_URL=f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port}/none"
        ).test_client()
        response = client.get("/api/v1/health")
    finally:
        db.configure(settings.database_url)
    assert response.status_code == 503
    assert response.json["failing"] == ["database"]
    assert response.json["checks"]["database"] == "error: OperationalError"
    assert "password" not in response.get_data(as_text=True)
