"""One JSON log line and the HTTP metrics per request, under the request's correlation id."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from app.logging import correlation_id
from app.ops.metrics import observe_request

log = logging.getLogger("app.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-Id when it is a sane token, otherwise a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.dc_started = time.perf_counter()
        g.dc_request_id = request_id = request_id_from(request.headers.get("X-Request-Id"))
        correlation_id.set(request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.pop("dc_started", None)
        if started is None:  # a before_request hook before ours answered
            return response
        elapsed = time.perf_counter() - started
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "<unmatched>"
        status = response.status_code
        observe_request(request.method, endpoint, status, elapsed)
        response.headers["X-Request-Id"] = g.dc_request_id
        level = logging.WARNING if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):  # LOG_LEVEL=WARNING: no line, so build none
            return response
        user = g.get("dc_user") or g.get("dc_account")
        log.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "request_id": g.dc_request_id,
                "user_id": str(user.id) if user is not None else None,
                "remote_addr": request.remote_addr,
            },
        )
        return response

    @app.teardown_request
    def _forget(exc: BaseException | None) -> None:
        correlation_id.set(None)
