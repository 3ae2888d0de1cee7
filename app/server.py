"""The gunicorn worker class: gevent, with the server's own errors in the contract's JSON shape.

gunicorn answers some requests before the application sees them: a request line over
``limit_request_line`` (414), headers over ``limit_request_field_size`` or
``limit_request_fields`` (431), a malformed request line or header, invalid header characters, an
unsupported transfer coding (400, 501). It writes those with ``gunicorn.util.write_error``, an
HTML page. This worker replaces that function, in its own process only, with one that writes
``{"code", "status", "message"}`` like every other error a client can trigger. gunicorn still
decides the status and logs the request as before.

Configured in deploy/gunicorn.conf.py as ``worker_class``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

_MESSAGES = {
    400: "The request is malformed",
    414: "The request line (method, path and query) is too long.",
    431: "The request's headers are too large or too many.",
    501: "The request uses a transfer coding the server does not support.",
}
_MAX_DETAIL = 200


def error_response(status_int: int, mesg: str = "") -> bytes:
    """A complete HTTP/1.1 response carrying the JSON error for `status_int`."""
    try:
        phrase = HTTPStatus(status_int).phrase
    except ValueError:
        phrase = "Error"
    message = _MESSAGES.get(status_int)
    if status_int == 400:
        # gunicorn's detail names what was wrong (quoted, so control characters are escaped).
        detail = " ".join(mesg.split())[:_MAX_DETAIL]
        message = f"{message}: {detail}" if detail else f"{message}."
    elif message is None:
        message = "An internal error occurred." if status_int >= 500 else phrase + "."
    body = json.dumps({"code": status_int, "status": phrase, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode("latin-1")
    return head + body


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error (same signature)."""
    util.write_nonblock(sock, error_response(status_int, mesg))


class JsonErrorGeventWorker(GeventWorker):
    """gunicorn's gevent worker, answering the server's own errors as JSON."""

    def init_process(self) -> None:
        # Base.handle_error looks the writer up on the module at call time; only worker
        # processes of this class are affected.
        util.write_error = write_json_error
        super().init_process()
