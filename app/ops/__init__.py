"""Operations: the queue dashboard, Prometheus metrics and request logs."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Log every request as one JSON line and count it for /metrics."""
    from app.ops import requestlog

    requestlog.init_app(app)
