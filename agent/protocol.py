"""Wire schemas of the agent protocol, shared by the platform and the agent.

Every frame is one JSON object ``{"event": str, "data": {...}, "id"?: str, "v"?: int}``. Unknown
fields are ignored (so either side can add fields without breaking the other); anything else that
is wrong raises :class:`ProtocolError`, the one decode error. This module must not import Flask or
SQLAlchemy: the agent installs without them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024

# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], as docker parses it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_REFERENCE = re.compile(
    rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)
RAM_LIMIT = re.compile(r"^[1-9][0-9]{0,12}[kmgKMG]?$")
_RAM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ProtocolError(Exception):
    """A frame that cannot be accepted: not JSON, too large, unknown event, or a bad shape."""

    def __init__(self, code: str, message: str, *, errors: Any = None, frame_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.frame_id = frame_id


def valid_image(reference: str) -> bool:
    return len(reference) <= 255 and IMAGE_REFERENCE.match(reference) is not None


def ram_limit_bytes(limit: str) -> int:
    """'16g' -> bytes. Raises ValueError for anything else."""
    if not RAM_LIMIT.match(limit):
        raise ValueError(f"invalid ram_limit {limit!r}")
    unit = limit[-1].lower() if limit[-1].isalpha() else ""
    number = int(limit[:-1] if unit else limit)
    return number * _RAM_UNITS[unit]


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class _UUIDString(fields.String):
    """A UUID kept as its canonical string form."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise ValidationError("Not a valid UUID.") from None


def _num(**kwargs: Any) -> fields.Float:
    return fields.Float(allow_nan=False, **kwargs)


# ---------------------------------------------------------------- agent -> platform
class GpuSchema(_Base):
    index = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=255))
    uuid = fields.String(required=True, validate=validate.Length(max=128))
    name = fields.String(required=True, validate=validate.Length(max=200))
    vram_mb = fields.Integer(required=True, validate=validate.Range(min=0))


class DetectedSpecsSchema(_Base):
    gpu_model = fields.String(load_default="", validate=validate.Length(max=200))
    gpu_count = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=256))
    gpu_vram_gb = _num(load_default=0, validate=validate.Range(min=0))
    gpus = fields.List(
        fields.Nested(GpuSchema), load_default=list, validate=validate.Length(max=256)
    )
    cpu_cores = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=100000)
    )
    ram_gb = _num(required=True, validate=validate.Range(min=0))
    disk_gb = _num(required=True, validate=validate.Range(min=0))
    cuda_version = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=32)
    )
    driver_version = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=64)
    )


class ContainerReportSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    state = fields.String(required=True, validate=validate.Length(max=32))


class HelloSchema(_Base):
    agent_version = fields.String(required=True, validate=validate.Length(min=1, max=64))
    specs = fields.Nested(DetectedSpecsSchema, required=True)
    containers = fields.List(
        fields.Nested(ContainerReportSchema), load_default=list, validate=validate.Length(max=1000)
    )
    draining = fields.Boolean(load_default=False)


class MetricsSchema(_Base):
    cpu_temp = _num(load_default=None, allow_none=True, validate=validate.Range(min=-50, max=200))
    cpu_utilization = _num(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=100)
    )
    gpu_temp = fields.List(
        _num(validate=validate.Range(min=-50, max=200)),
        load_default=list,
        validate=validate.Length(max=256),
    )
    gpu_utilization = fields.List(
        _num(validate=validate.Range(min=0, max=100)),
        load_default=list,
        validate=validate.Length(max=256),
    )
    gpu_memory_used_mb = fields.List(
        _num(validate=validate.Range(min=0)), load_default=list, validate=validate.Length(max=256)
    )
    gpu_power_w = fields.List(
        _num(validate=validate.Range(min=0)), load_default=list, validate=validate.Length(max=256)
    )
    ram_usage_mb = _num(required=True, validate=validate.Range(min=0))
    disk_usage_gb = _num(required=True, validate=validate.Range(min=0))


class HeartbeatSchema(_Base):
    node_id = _UUIDString(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(["online", "busy", "maintenance"])
    )
    metrics = fields.Nested(MetricsSchema, required=True)


class InstanceStartedSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(required=True, validate=validate.Length(min=1, max=128))


class InstanceFailedSchema(_Base):
    rental_id = _UUIDString(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class InstanceStoppedSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=128)
    )
    exit_code = fields.Integer(load_default=None, allow_none=True)


class AckSchema(_Base):
    id = fields.String(required=True, validate=validate.Length(min=1, max=64))


# ---------------------------------------------------------------- platform -> agent
class ResourceLimitsSchema(_Base):
    gpu_indices = fields.List(
        fields.String(validate=validate.Regexp(r"^[0-9]{1,3}$")),
        load_default=list,
        validate=validate.Length(max=64),
    )
    cpu_cores = _num(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=4096, min_inclusive=False),
    )
    ram_limit = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(RAM_LIMIT, error="Expected e.g. 16g."),
    )


class TunnelSchema(_Base):
    server_addr = fields.String(required=True, validate=validate.Length(min=1, max=255))
    server_port = fields.Integer(required=True, validate=validate.Range(min=1, max=65535))
    token = fields.String(required=True, validate=validate.Length(max=512))
    user = fields.String(required=True, validate=validate.Length(min=1, max=128))
    metadatas = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class StartInstanceSchema(_Base):
    rental_id = _UUIDString(required=True)
    image = fields.String(required=True)
    command = fields.List(
        fields.String(validate=validate.Length(max=4096)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=256),
    )
    resource_limits = fields.Nested(ResourceLimitsSchema, load_default=dict)
    env_vars = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")),
        values=fields.String(validate=validate.Length(max=32768)),
        load_default=dict,
    )
    proxy_port_mapping = fields.Dict(
        keys=fields.String(), values=fields.Integer(strict=True), load_default=dict
    )
    tunnel = fields.Nested(TunnelSchema, load_default=None, allow_none=True)

    @validates("image")
    def _image(self, value: str, **kwargs: Any) -> None:
        if not valid_image(value):
            raise ValidationError("Not a valid image reference.")

    @validates("proxy_port_mapping")
    def _ports(self, value: dict[str, int], **kwargs: Any) -> None:
        for container_port, public_port in value.items():
            if not container_port.isdigit() or not 1 <= int(container_port) <= 65535:
                raise ValidationError(f"Container port {container_port!r} is out of range.")
            if not 1 <= public_port <= 65535:
                raise ValidationError(f"Public port {public_port!r} is out of range.")


class StopInstanceSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=128)
    )
    grace_seconds = fields.Integer(load_default=10, validate=validate.Range(min=0, max=600))


class DrainNodeSchema(_Base):
    node_id = _UUIDString(required=True)


class WelcomeSchema(_Base):
    """Sent by the platform right after the upgrade, before anything else: who the agent is."""

    node_id = _UUIDString(required=True)
    heartbeat_interval = _num(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=300)
    )
    draining = fields.Boolean(load_default=False)
    tunnel = fields.Nested(TunnelSchema, load_default=None, allow_none=True)


class ErrorSchema(_Base):
    code = fields.String(required=True)
    message = fields.String(required=True)
    id = fields.String(load_default=None, allow_none=True)


AGENT_EVENTS: dict[str, type[Schema]] = {
    "hello": HelloSchema,
    "heartbeat": HeartbeatSchema,
    "instance_started": InstanceStartedSchema,
    "instance_failed": InstanceFailedSchema,
    "instance_stopped": InstanceStoppedSchema,
    "ack": AckSchema,
    "error": ErrorSchema,
}
PLATFORM_EVENTS: dict[str, type[Schema]] = {
    "welcome": WelcomeSchema,
    "start_instance": StartInstanceSchema,
    "stop_instance": StopInstanceSchema,
    "drain_node": DrainNodeSchema,
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


def decode(raw: str | bytes, *, allowed: dict[str, type[Schema]]) -> Message:
    """Parse and validate one frame whose event must be in `allowed`."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_FRAME_BYTES:
            raise ProtocolError(
                "frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes."
            )
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid_json", "The frame is not UTF-8 JSON.") from None
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.")
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
        raise ProtocolError("unknown_event", f"Unknown event {event[:64]!r}.", frame_id=frame_id)
    try:
        data = _SCHEMAS[event].load(envelope["data"])
    except ValidationError as exc:
        raise ProtocolError(
            "invalid_data",
            f"The data of {event!r} is invalid.",
            errors=exc.messages,
            frame_id=frame_id,
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
