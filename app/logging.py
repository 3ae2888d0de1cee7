"""Structured logging: one JSON object per line, with the request or rental id when known."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


REDACTED = "[redacted]"
_secrets: set[str] = set()


def redact_in_logs(*secrets: str | None) -> None:
    """Never write these values in a log line (the frps plugin secret travels in a URL path)."""
    _secrets.update(s for s in secrets if s and len(s) >= 4)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Replaces every registered secret in a record's message, fields and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in _RESERVED and not key.startswith("_"):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_REDACTOR = RedactSecrets()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_dc_json", False) for h in root.handlers):
        root.setLevel(level)
        return
    # gunicorn's loggers have handlers of their own and do not propagate: filter them too.
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_REDACTOR)
    handler.setFormatter(JsonFormatter())
    handler._dc_json = True  # type: ignore[attr-defined]
    root.handlers = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "docker", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
