"""The frps plugin secret travels in the URL path: no log line of the server may show it."""

from __future__ import annotations

import sys

import requests

from tests.procs import Proc, free_port, running, wait_http

SECRET = "test-plugin-secret"


def test_the_plugin_secret_is_redacted_from_request_access_and_error_logs(_database):
    port = free_port()
    server = Proc(
        "secret-log-api",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "-",  # production leaves it off; a deployment that turns it on is covered too
            "wsgi:app",
        ],
        {"API_PORT": str(port), "LOG_LEVEL": "INFO"},
    )
    server.log_path.unlink(missing_ok=True)
    base = f"http://127.0.0.1:{port}/api/v1/proxy/frps-plugin/{SECRET}"
    with running(server):
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc=server)
        answers = [
            requests.post(f"{base}?op=Login", json={"op": "Login", "content": {}}, timeout=5),
            requests.post(base, data="not json", timeout=5),  # 400
            requests.get(base, timeout=5),  # 405
            requests.post(f"{base}/extra", timeout=5),  # 404, unmatched
        ]
    assert [a.status_code for a in answers] == [200, 400, 405, 404]
    log = server.log_path.read_text()
    assert '"path": "/api/v1/proxy/frps-plugin/[redacted]"' in log  # the request log
    assert '"POST /api/v1/proxy/frps-plugin/[redacted]?op=Login HTTP/1.1" 200' in log  # access
    assert SECRET not in log
