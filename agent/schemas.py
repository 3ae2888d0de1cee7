"""The wire schemas of the agent protocol, one per event (agent/protocol.py frames them).

Unknown fields are ignored, so either side can add fields without breaking the other; every field
added after version 1 is optional, so an older peer keeps working.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC
from typing import Annotated, Any, Literal

import msgspec
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from agent.values import RAM_LIMIT, SSH_PUBLIC_KEY, valid_image

MAX_ONSTART_BYTES = 4096
MAX_LOG_BYTES = 64 * 1024
MAX_LOG_TAIL = 5000
# Why a rental did not start, machine-readable (`instance_failed.failure_code`).
FAILURE_CODES = (
    "image_not_found",
    "image_pull_failed",
    "registry_auth_failed",
    "engine_unavailable",
    "insufficient_resources",
    "start_timeout",
    "invalid_request",
)
PROGRESS_PHASES = ("pulling", "starting")
# Agent events sent only to a platform that lists them in welcome's `features`.
OPTIONAL_AGENT_EVENTS = ("instance_progress", "logs")


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


# The heartbeat again, as msgspec structs: every agent sends one every few seconds, and these decode
# and check it in one pass in C. They accept no frame that HeartbeatSchema refuses (bounds that
# exclude infinities, as allow_nan=False does; no strings for numbers); a frame they refuse goes
# through the marshmallow schemas above, whose errors are the protocol's.
_Temperature = Annotated[float, msgspec.Meta(ge=-50, le=200)]
_Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
_Amount = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]
_PerGpu = msgspec.Meta(max_length=256)


class MetricsStruct(msgspec.Struct, kw_only=True):
    cpu_temp: _Temperature | None = None
    cpu_utilization: _Percent | None = None
    gpu_temp: Annotated[list[_Temperature], _PerGpu] = []
    gpu_utilization: Annotated[list[_Percent], _PerGpu] = []
    gpu_memory_used_mb: Annotated[list[_Amount], _PerGpu] = []
    gpu_power_w: Annotated[list[_Amount], _PerGpu] = []
    ram_usage_mb: _Amount
    disk_usage_gb: _Amount


class HeartbeatStruct(msgspec.Struct):
    node_id: str  # made canonical (and checked) by the decoder, as _UUIDString does
    status: Literal["online", "busy", "maintenance"]
    metrics: MetricsStruct


class InstanceStartedSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(required=True, validate=validate.Length(min=1, max=128))


class InstanceFailedSchema(_Base):
    rental_id = _UUIDString(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    failure_code = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(FAILURE_CODES)
    )


class InstanceProgressSchema(_Base):
    """Where a start is: pulling the image (progress 0..1 when the engine says) or starting."""

    rental_id = _UUIDString(required=True)
    phase = fields.String(required=True, validate=validate.OneOf(PROGRESS_PHASES))
    progress = _num(load_default=None, allow_none=True, validate=validate.Range(min=0, max=1))


class LogsSchema(_Base):
    """One frame of a rental's output; `request_id` is the fetch_logs one, or "final"."""

    request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    rental_id = _UUIDString(required=True)
    lines = fields.List(
        fields.String(validate=validate.Length(max=MAX_LOG_BYTES)),
        required=True,
        validate=validate.Length(max=MAX_LOG_BYTES),
    )
    truncated = fields.Boolean(load_default=False)
    seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))
    last = fields.Boolean(required=True)


class InstanceStoppedSchema(_Base):
    rental_id = _UUIDString(required=True)
    container_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=128)
    )
    exit_code = fields.Integer(load_default=None, allow_none=True)


class GpuMeasurementSchema(_Base):
    index = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=255))
    tflops = _num(required=True, validate=validate.Range(min=0))
    vram_gb = _num(required=True, validate=validate.Range(min=0))
    h2d_gbps = _num(required=True, validate=validate.Range(min=0))


class MeasuredSchema(_Base):
    """What the self-test measured; a part that could not be measured is null, never estimated."""

    cpu_cores = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    cpu_gflops = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    ram_gb = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    ram_fill_gbps = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    disk_gb = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    disk_write_mbps = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    container_ok = fields.Boolean(load_default=False)
    tunnel_ok = fields.Boolean(load_default=None, allow_none=True)
    tflops = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    gpu_vram_gb = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    h2d_gbps = _num(load_default=None, allow_none=True, validate=validate.Range(min=0))
    gpus = fields.List(
        fields.Nested(GpuMeasurementSchema),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=256),
    )


class SelfTestResultSchema(_Base):
    """The answer to `self_test`: the figures, what failed, and the proof that the benchmark ran
    (agent/bench.py; checked by the platform, see docs/hosts.md)."""

    run_id = _UUIDString(required=True)
    nonce = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    measured = fields.Nested(MeasuredSchema, required=True)
    failures = fields.List(
        fields.String(validate=validate.Length(max=1000)),
        load_default=list,
        validate=validate.Length(max=32),
    )
    # Free-form on the wire (its parts are checked by the platform, not by the schema).
    proof = fields.Dict(keys=fields.String(validate=validate.Length(max=64)), load_default=dict)


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
    gpu_uuids = fields.List(
        fields.String(validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")),
        load_default=list,
        validate=validate.Length(max=64),
    )
    pids_limit = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=16, max=4_194_304)
    )


class RegistryAuthSchema(_Base):
    username = fields.String(required=True, validate=validate.Length(min=1, max=256))
    password = fields.String(required=True, validate=validate.Length(min=1, max=4096))


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
    entrypoint = fields.List(
        fields.String(validate=validate.Length(max=4096)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=256),
    )
    onstart = fields.String(load_default=None, allow_none=True)
    ssh_keys = fields.List(
        fields.String(
            validate=validate.Regexp(SSH_PUBLIC_KEY, error="Not an OpenSSH public key line.")
        ),
        load_default=list,
        validate=validate.Length(max=32),
    )
    registry_auth = fields.Nested(RegistryAuthSchema, load_default=None, allow_none=True)
    # Past this instant the platform has given up on the start; the agent must not run it.
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=UTC)

    @validates("onstart")
    def _onstart(self, value: str | None, **kwargs: Any) -> None:
        if value is not None and len(value.encode()) > MAX_ONSTART_BYTES:
            raise ValidationError(f"At most {MAX_ONSTART_BYTES} bytes.")
        if value is not None and "\x00" in value:
            raise ValidationError("NUL characters are not allowed.")

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


class FetchLogsSchema(_Base):
    """Ask for a rental's output; answered by `logs` frames with the same request_id."""

    request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    rental_id = _UUIDString(required=True)
    tail = fields.Integer(load_default=200, validate=validate.Range(min=1, max=MAX_LOG_TAIL))
    max_bytes = fields.Integer(
        load_default=MAX_LOG_BYTES, validate=validate.Range(min=1, max=MAX_LOG_BYTES)
    )


class DrainNodeSchema(_Base):
    node_id = _UUIDString(required=True)


class SelfTestLimitsSchema(_Base):
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


class SelfTestWorkSchema(_Base):
    """How much work the benchmark does (the platform sizes it; defaults suit a real host)."""

    disk_mb = fields.Integer(load_default=256, validate=validate.Range(min=1, max=16384))
    ram_mb = fields.Integer(load_default=1024, validate=validate.Range(min=1, max=1 << 20))
    matrix = fields.Integer(load_default=512, validate=validate.Range(min=16, max=8192))


class SelfTestSchema(_Base):
    """Run the benchmark container and answer `self_test_result` with the same run_id and nonce."""

    run_id = _UUIDString(required=True)
    image = fields.String(required=True)
    nonce = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    expected = fields.Dict(keys=fields.String(), load_default=dict)
    limits = fields.Nested(SelfTestLimitsSchema, load_default=dict)
    work = fields.Nested(SelfTestWorkSchema, load_default=dict)

    @validates("image")
    def _image(self, value: str, **kwargs: Any) -> None:
        if not valid_image(value):
            raise ValidationError("Not a valid image reference.")


class WelcomeSchema(_Base):
    """Sent by the platform right after the upgrade, before anything else: who the agent is."""

    node_id = _UUIDString(required=True)
    heartbeat_interval = _num(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=300)
    )
    draining = fields.Boolean(load_default=False)
    tunnel = fields.Nested(TunnelSchema, load_default=None, allow_none=True)
    # The optional agent events this platform understands (OPTIONAL_AGENT_EVENTS); the agent sends
    # none of the others, so a platform that predates them never receives them.
    features = fields.List(
        fields.String(validate=validate.Length(max=64)),
        load_default=list,
        validate=validate.Length(max=64),
    )


class ErrorSchema(_Base):
    code = fields.String(required=True)
    message = fields.String(required=True)
    id = fields.String(load_default=None, allow_none=True)
