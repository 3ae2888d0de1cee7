"""No API key secret reaches the logs, at any level, in any of the app's log lines."""

from __future__ import annotations

import io
import json
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from app.logging import JsonFormatter
from tests.auth.tokens import bearer


def test_api_key_secrets_never_appear_in_logs_even_at_debug(client, user, caplog):
    stream = io.StringIO()
    json_handler = logging.StreamHandler(stream)
    json_handler.setFormatter(JsonFormatter())  # the formatter the processes log with
    json_handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(json_handler)
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    try:
        full = client.post(
            "/api/v1/api-keys", json={"name": "ci", "scope": "full"}, headers=user.headers
        )
        read = client.post(
            "/api/v1/api-keys", json={"name": "ro", "scope": "read"}, headers=user.headers
        )
        secrets += [full.json["api_key"], read.json["api_key"]]
        full_key, read_key = bearer(secrets[0]), bearer(secrets[1])
        public_key = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        statuses = [
            client.get("/api/v1/me", headers=full_key).status_code,
            client.get("/api/v1/api-keys", headers=full_key).status_code,
            client.get("/api/v1/offers", headers=read_key).status_code,
            client.get("/api/v1/rentals", headers=read_key).status_code,
            client.post("/api/v1/rentals", json={}, headers=read_key).status_code,
            client.post(
                "/api/v1/me/ssh-keys",
                json={"name": "k", "public_key": public_key.decode()},
                headers=full_key,
            ).status_code,
            client.post("/api/v1/rentals", json={"bad": "body"}, headers=full_key).status_code,
            client.delete(
                f"/api/v1/api-keys/{full.json['key']['id']}", headers=full_key
            ).status_code,
            client.get("/api/v1/me", headers=full_key).status_code,
            client.get("/api/v1/me", headers=bearer(secrets[1][:-3] + "xyz")).status_code,
            client.get("/api/v1/me?api_key=x", headers={"Authorization": secrets[1]}).status_code,
        ]
    finally:
        root.removeHandler(json_handler)

    assert statuses == [200, 200, 200, 200, 403, 201, 422, 204, 401, 401, 401]
    json_lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    request_lines = [line for line in json_lines if line.get("msg") == "request"]
    assert len(request_lines) >= len(statuses) + 2  # the request log was really captured
    assert any(line["status"] == 401 for line in request_lines)
    captured = stream.getvalue() + caplog.text + repr([r.__dict__ for r in caplog.records])
    for secret in secrets:
        assert secret not in captured
        assert secret[len("dck_") :] not in captured
    assert "dck_" not in captured
