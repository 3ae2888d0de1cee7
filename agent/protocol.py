"""The agent protocol's framing, shared by the platform and the agent.

Every frame is one JSON object ``{"event": str, "data": {...}, "id"?: str, "v"?: int}``; each
event's data has a schema in agent/schemas.py. Anything wrong raises :class:`ProtocolError`, the one
decode error. This module must not import Flask or SQLAlchemy: the agent installs without them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from agent.schemas import (
    FAILURE_CODES,
    MAX_LOG_BYTES,
    MAX_LOG_TAIL,
    MAX_ONSTART_BYTES,
    OPTIONAL_AGENT_EVENTS,
    PROGRESS_PHASES,
    AckSchema,
    ContainerReportSchema,
    DetectedSpecsSchema,
    DrainNodeSchema,
    ErrorSchema,
    FetchLogsSchema,
    GpuSchema,
    HeartbeatSchema,
    HeartbeatStruct,
    HelloSchema,
    InstanceFailedSchema,
    InstanceProgressSchema,
    InstanceStartedSchema,
    InstanceStoppedSchema,
    LogsSchema,
    MetricsSchema,
    RegistryAuthSchema,
    ResourceLimitsSchema,
    SelfTestResultSchema,
    SelfTestSchema,
    StartInstanceSchema,
    StopInstanceSchema,
    TunnelSchema,
    WelcomeSchema,
)
from agent.values import ram_limit_bytes, registry_host, valid_image

# Re-exported: the platform imports its protocol names from this module only.
__all__ = [
    "FAILURE_CODES",
    "MAX_LOG_BYTES",
    "MAX_LOG_TAIL",
    "MAX_ONSTART_BYTES",
    "OPTIONAL_AGENT_EVENTS",
    "PROGRESS_PHASES",
    "AckSchema",
    "ContainerReportSchema",
    "DetectedSpecsSchema",
    "DrainNodeSchema",
    "ErrorSchema",
    "FetchLogsSchema",
    "GpuSchema",
    "HeartbeatSchema",
    "HeartbeatStruct",
    "HelloSchema",
    "InstanceFailedSchema",
    "InstanceProgressSchema",
    "InstanceStartedSchema",
    "InstanceStoppedSchema",
    "LogsSchema",
    "MetricsSchema",
    "RegistryAuthSchema",
    "ResourceLimitsSchema",
    "SelfTestResultSchema",
    "SelfTestSchema",
    "StartInstanceSchema",
    "StopInstanceSchema",
    "TunnelSchema",
    "WelcomeSchema",
    "ram_limit_bytes",
    "registry_host",
    "valid_image",
]

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
# A larger frame is still read up to this size, only to find its id and rental so that the command
# can be acknowledged and refused (otherwise the platform would resend it forever).
MAX_REFUSABLE_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """A frame that cannot be accepted: not JSON, too large, unknown event, or a bad shape."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        errors: Any = None,
        frame_id: str | None = None,
        event: str | None = None,
        rental_id: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.frame_id = frame_id
        self.event = event  # the frame's event, when it could be read
        self.rental_id = rental_id  # the rental the frame names, when it is a valid UUID


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


AGENT_EVENTS: dict[str, type[Schema]] = {
    "hello": HelloSchema,
    "heartbeat": HeartbeatSchema,
    "instance_started": InstanceStartedSchema,
    "instance_failed": InstanceFailedSchema,
    "instance_stopped": InstanceStoppedSchema,
    "instance_progress": InstanceProgressSchema,
    "logs": LogsSchema,
    "self_test_result": SelfTestResultSchema,
    "ack": AckSchema,
    "error": ErrorSchema,
}
PLATFORM_EVENTS: dict[str, type[Schema]] = {
    "welcome": WelcomeSchema,
    "start_instance": StartInstanceSchema,
    "stop_instance": StopInstanceSchema,
    "fetch_logs": FetchLogsSchema,
    "drain_node": DrainNodeSchema,
    "self_test": SelfTestSchema,
    "error": ErrorSchema,
}
_SCHEMAS = {name: cls() for name, cls in {**AGENT_EVENTS, **PLATFORM_EVENTS}.items()}


class _EnvelopeSchema(_Base):
    event = fields.String(required=True, validate=validate.Length(min=1, max=64))
    data = fields.Dict(load_default=dict)
    id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    v = fields.Integer(load_default=PROTOCOL_VERSION)


_ENVELOPE = _EnvelopeSchema()


@dataclass(frozen=True)
class Message:
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    v: int = PROTOCOL_VERSION


def _identify(raw: str | bytes) -> tuple[str | None, str | None, str | None]:
    """(id, event, rental_id) of a frame that is refused whole, where they can be read."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    frame_id, event, data = obj.get("id"), obj.get("event"), obj.get("data")
    rental_id = data.get("rental_id") if isinstance(data, dict) else None
    try:
        rental_id = str(uuid.UUID(rental_id)) if isinstance(rental_id, str) else None
    except ValueError:
        rental_id = None
    return (
        frame_id if isinstance(frame_id, str) and 0 < len(frame_id) <= 64 else None,
        event if isinstance(event, str) and len(event) <= 64 else None,
        rental_id,
    )


class _HeartbeatFrame(msgspec.Struct):
    event: Literal["heartbeat"]
    data: HeartbeatStruct
    id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    v: int = PROTOCOL_VERSION


_HEARTBEAT = msgspec.json.Decoder(_HeartbeatFrame)


def _fast_heartbeat(raw: str | bytes) -> Message | None:
    """A valid heartbeat frame, decoded by msgspec; None for anything else (the schemas decide)."""
    try:
        frame = _HEARTBEAT.decode(raw)
        node_id = str(uuid.UUID(frame.data.node_id))
    except (msgspec.MsgspecError, ValueError):
        return None
    data = {
        "node_id": node_id,
        "status": frame.data.status,
        "metrics": msgspec.structs.asdict(frame.data.metrics),
    }
    return Message(event="heartbeat", data=data, id=frame.id, v=frame.v)


def decode(raw: str | bytes, *, allowed: dict[str, type[Schema]]) -> Message:
    """Parse and validate one frame whose event must be in `allowed`.

    A frame over MAX_FRAME_BYTES is refused; up to MAX_REFUSABLE_BYTES its id, event and rental
    are still read into the ProtocolError so that the receiver can acknowledge and refuse it.
    """
    if len(raw) > MAX_FRAME_BYTES:
        found = _identify(raw) if len(raw) <= MAX_REFUSABLE_BYTES else (None, None, None)
        raise ProtocolError(
            "frame_too_large",
            f"Frames are limited to {MAX_FRAME_BYTES} bytes.",
            frame_id=found[0],
            event=found[1],
            rental_id=found[2],
        )
    if "heartbeat" in allowed:
        message = _fast_heartbeat(raw)
        if message is not None:
            return message
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid_json", "The frame is not UTF-8 JSON.") from None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_frame", "A frame must be a JSON object.")
    try:
        envelope = _ENVELOPE.load(obj)
    except ValidationError as exc:
        raise ProtocolError(
            "invalid_frame", "The frame's envelope is invalid.", errors=exc.messages
        ) from None
    frame_id = envelope["id"]
    event = envelope["event"]
    if event not in allowed:
        raise ProtocolError(
            "unknown_event", f"Unknown event {event[:64]!r}.", frame_id=frame_id, event=event
        )
    try:
        data = _SCHEMAS[event].load(envelope["data"])
    except ValidationError as exc:
        raise ProtocolError(
            "invalid_data",
            f"The data of {event!r} is invalid.",
            errors=exc.messages,
            frame_id=frame_id,
            event=event,
            rental_id=_identify(raw)[2],
        ) from None
    return Message(event=event, data=data, id=frame_id, v=envelope["v"])


def decode_from_agent(raw: str | bytes) -> Message:
    return decode(raw, allowed=AGENT_EVENTS)


def decode_from_platform(raw: str | bytes) -> Message:
    return decode(raw, allowed=PLATFORM_EVENTS)


def encode(event: str, data: dict[str, Any], id: str | None = None) -> str:
    """Serialize one frame; `data` is validated against the event's schema first."""
    schema = _SCHEMAS.get(event)
    if schema is None:
        raise ProtocolError("unknown_event", f"Unknown event {event!r}.")
    errors = schema.validate(data)
    if errors:
        raise ProtocolError("invalid_data", f"The data of {event!r} is invalid.", errors=errors)
    frame: dict[str, Any] = {"event": event, "data": data, "v": PROTOCOL_VERSION}
    if id is not None:
        frame["id"] = id
    return json.dumps(frame, separators=(",", ":"), default=str)


def error_frame(code: str, message: str, *, frame_id: str | None = None, errors: Any = None) -> str:
    data: dict[str, Any] = {"code": code, "message": message}
    if frame_id is not None:
        data["id"] = frame_id
    frame: dict[str, Any] = {"event": "error", "data": data, "v": PROTOCOL_VERSION}
    if errors is not None:
        frame["data"]["errors"] = errors
    return json.dumps(frame, separators=(",", ":"), default=str)
