"""Structured logs: one JSON line per request and per actor run, one id from route to actor."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid

from app.logging import JsonFormatter, correlation_id
from app.ops.actors import ping
from app.ops.queues import NAMESPACE
from app.redis_client import get_redis
from app.web import db_session
from tests.ops.helpers import ops_worker
from tests.procs import wait_until


@contextlib.contextmanager
def json_lines(logger_name: str):
    """The JSON lines the platform's formatter writes for `logger_name`, formatted as emitted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(json.loads(x) for x in stream.getvalue().splitlines())


def test_each_request_logs_one_json_line_with_its_request_id(client, user):
    with json_lines("app.request") as lines:
        response = client.get("/api/v1/me", headers={**user.headers, "X-Request-Id": "req-abc.1"})
        generated = client.get("/api/v1/nope")

    assert response.headers["X-Request-Id"] == "req-abc.1"
    first, second = lines
    assert first["msg"] == "request" and first["correlation_id"] == "req-abc.1"
    assert (first["method"], first["path"], first["endpoint"], first["status"]) == (
        "GET",
        "/api/v1/me",
        "/api/v1/me",
        200,
    )
    assert first["user_id"] == str(user.id) and first["duration_ms"] >= 0
    assert (second["status"], second["endpoint"], second["user_id"]) == (404, "<unmatched>", None)
    assert second["request_id"] == second["correlation_id"] == generated.headers["X-Request-Id"]
    assert second["request_id"] != "req-abc.1"


def test_a_request_id_that_is_not_a_plain_token_is_replaced(client):
    response = client.get("/api/v1/health", headers={"X-Request-Id": "x\u2028<script>"})

    assert len(response.headers["X-Request-Id"]) == 32


def test_the_request_id_travels_from_the_route_into_the_message_and_the_actor_log(app):
    request_id = f"req-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    with app.test_request_context("/api/v1/anything", headers={"X-Request-Id": request_id}):
        app.preprocess_request()
        session = db_session()
        ping.send_after_commit(session, token)
        session.commit()
    assert correlation_id.get() is None  # the request's id does not leak past its teardown

    client = get_redis()
    (data,) = client.hvals(f"{NAMESPACE}:system.msgs")
    assert json.loads(data)["options"]["correlation_id"] == request_id

    with ops_worker(name="ops-log-worker", env={"LOG_LEVEL": "INFO"}) as worker:
        wait_until(lambda: client.get(f"dc:ping:{token}") == "pong", what="the ping run")
        lines = wait_until(
            lambda: [
                json.loads(line)
                for line in worker.log_path.read_text().splitlines()
                if line.startswith("{") and request_id in line and '"actor run"' in line
            ],
            what="the actor log line",
        )
    (line,) = lines  # type: ignore[misc]
    assert (line["actor"], line["queue"], line["ok"]) == ("ping", "system", True)
    assert line["correlation_id"] == request_id and line["duration_ms"] >= 0
