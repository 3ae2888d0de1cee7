"""The web server's own errors are the contract's JSON, through a real gunicorn process.

gunicorn answers some requests before the application runs (request line or headers too long,
malformed headers); those must look like every other error: `{"code", "status", "message"}`.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from http import HTTPStatus

import pytest
import requests

from tests.procs import api_server, free_port, running, wait_http


@pytest.fixture(scope="module")
def server(_database) -> Iterator[tuple[str, int]]:
    port = free_port()
    with running(api_server(port, name="server-errors-api")) as (proc,):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        yield "127.0.0.1", port


def raw(server: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; return the status, headers and body of the answer."""
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, code: int) -> dict:
    assert status == code, body
    assert headers["content-type"].startswith("application/json"), (headers, body)
    payload = json.loads(body)
    assert set(payload) == {"code", "status", "message"}, payload
    assert payload["code"] == code
    assert payload["status"] == HTTPStatus(code).phrase
    assert payload["message"]
    assert b"<html" not in body.lower()
    return payload


def test_a_request_line_over_the_server_limit_is_a_json_414(server):
    query = "gpu_vram_gb>=24 " * 600
    status, headers, body = raw(
        server, f"GET /api/v1/offers?q={query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    payload = assert_json_error(status, headers, body, 414)
    assert "too long" in payload["message"]


def test_a_long_q_through_an_http_client_is_a_json_414(server):
    host, port = server
    response = requests.get(
        f"http://{host}:{port}/api/v1/offers", params={"q": "€" * 1000}, timeout=10
    )
    assert response.status_code == 414
    assert response.json()["code"] == 414


def test_a_huge_idempotency_key_is_a_json_431(server):
    status, headers, body = raw(
        server,
        b"POST /api/v1/rentals HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "
        + b"k" * 9000
        + b"\r\nContent-Length: 0\r\n\r\n",
    )
    assert_json_error(status, headers, body, 431)


def test_too_many_headers_is_a_json_431(server):
    extra = b"".join(b"X-Filler-%d: 1\r\n" % i for i in range(150))
    status, headers, body = raw(
        server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
    )
    assert_json_error(status, headers, body, 431)


@pytest.mark.parametrize(
    "header",
    [
        b"Idempotency-Key: abc\x00def",
        b"Idempotency-Key: abc\x7fdef",
        b"Idem potency-Key: abc",
        b"Idempotency-Key abc",
    ],
)
def test_an_invalid_header_is_a_json_400(server, header):
    status, headers, body = raw(
        server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
    )
    payload = assert_json_error(status, headers, body, 400)
    assert payload["message"].startswith("The request is malformed")


def test_a_malformed_request_line_is_a_json_400(server):
    status, headers, body = raw(server, b"GET /api/v1/health\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_json_error(status, headers, body, 400)


def test_a_long_idempotency_key_within_server_limits_is_the_apps_json_422(server, settings):
    from app.auth.tokens import mint_dev_token

    host, port = server
    response = requests.post(
        f"http://{host}:{port}/api/v1/rentals",
        headers={
            "Idempotency-Key": "k" * 4000,
            "Authorization": f"Bearer {mint_dev_token(settings, 'user_long_key')}",
        },
        json={"node_id": str(uuid.uuid4()), "image": "ubuntu:22.04"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == {"Idempotency-Key": ["Invalid value."]}


def test_a_valid_request_still_gets_a_normal_answer(server):
    status, headers, body = raw(server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status in (200, 503)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["checks"]
