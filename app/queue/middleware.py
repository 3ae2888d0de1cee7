"""Broker middleware: database set-up per process, structured logs per actor run, run stats."""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from app import db
from app.config import get_settings
from app.logging import configure_logging, correlation_id, redact_in_logs
from app.queue.recorder import OpsRecorder

log = logging.getLogger("workers")


class ProcessSetup(Middleware):
    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        settings = get_settings()
        configure_logging(settings.log_level)
        redact_in_logs(settings.frps_plugin_secret, settings.frps_token)
        db.configure(settings.database_url)


class ActorLog(Middleware):
    """One JSON line per actor run, carrying the correlation id from the message options."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        message.options["_dc_started"] = time.monotonic()
        correlation_id.set(message.options.get("correlation_id") or _guess_id(message))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = message.options.pop("_dc_started", None)
        elapsed = (time.monotonic() - started) * 1000 if started else None
        log.log(
            logging.ERROR if exception else logging.INFO,
            "actor run",
            extra={
                "actor": message.actor_name,
                "message_id": message.message_id,
                "queue": message.queue_name,
                "ok": exception is None,
                "error": repr(exception) if exception else None,
                "duration_ms": round(elapsed, 2) if elapsed is not None else None,
                "retries": message.options.get("retries", 0),
                **_id_arguments(broker, message),
            },
        )
        correlation_id.set(None)

    after_skip_message = after_process_message


def _id_arguments(broker: dramatiq.Broker, message: Any) -> dict[str, Any]:
    """The actor's arguments named *_id (rental_id, node_id...), so one grep finds a rental's story."""
    try:
        fn = broker.get_actor(message.actor_name).fn
        bound = inspect.signature(fn).bind_partial(*message.args, **message.kwargs).arguments
    except Exception:
        return {}
    return {k: v for k, v in bound.items() if k.endswith("_id") and k not in _RESERVED_EXTRA}


_RESERVED_EXTRA = {"message_id", "correlation_id"}


def _guess_id(message: Any) -> str | None:
    for value in list(message.args) + list(message.kwargs.values()):
        if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
            return value
    return None


def install(broker: dramatiq.Broker) -> None:
    broker.add_middleware(ProcessSetup())
    broker.add_middleware(ActorLog())
    broker.add_middleware(OpsRecorder())
