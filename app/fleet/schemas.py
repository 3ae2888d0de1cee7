from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.enums import NodeStatus
from app.fleet.metrics import (
    MAX_POINTS,
    MAX_SINCE_SECONDS,
    MIN_EVERY_SECONDS,
    default_every,
    parse_duration,
)
from app.money import POSITIVE_PATTERN, Money
from app.validation import BaseSchema, Text

POSITIVE = {"pattern": POSITIVE_PATTERN}

_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_CUDA = re.compile(r"^\d{1,3}(\.\d{1,3}){0,2}$")


NAME_MAX = 100  # host_nodes.name


class SpecsSchema(BaseSchema):
    gpu_model = Text(required=True, min_length=1, max_length=100)
    gpu_count = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=64))
    gpu_vram_gb = fields.Float(
        required=True, allow_nan=False, validate=validate.Range(min=0, max=4096)
    )
    tflops = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, max=1e6))
    cpu_cores = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=4096))
    ram_gb = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=0, max=65536, min_inclusive=False),
    )
    disk_gb = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, max=1e7))
    cuda_version = Text(
        max_length=11,
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(_CUDA, error="Expected a version like 12.4."),
    )

    @validates_schema
    def _gpus(self, data, **kwargs):
        if data.get("gpu_count", 0) > 0 and data.get("gpu_vram_gb", 0) <= 0:
            raise ValidationError("A GPU node must declare its VRAM.", "gpu_vram_gb")


class PricingSchema(BaseSchema):
    hourly_rate = Money(required=True, metadata=POSITIVE)
    auto_match_market = fields.Boolean(load_default=False)
    min_hourly_rate = Money(load_default=None, allow_none=True, metadata=POSITIVE)

    @validates_schema
    def _floor(self, data, **kwargs):
        floor = data.get("min_hourly_rate")
        if (
            floor is not None
            and data.get("hourly_rate") is not None
            and floor > data["hourly_rate"]
        ):
            raise ValidationError("Must not exceed hourly_rate.", "min_hourly_rate")


class LocationSchema(BaseSchema):
    country = Text(
        max_length=2,
        required=True,
        validate=validate.Regexp(
            _COUNTRY, error="Expected an ISO 3166 alpha-2 country code such as US."
        ),
    )
    city = Text(max_length=100, load_default=None, allow_none=True)
    lat = fields.Float(
        load_default=None,
        allow_none=True,
        allow_nan=False,
        validate=validate.Range(min=-90, max=90),
    )
    lng = fields.Float(
        load_default=None,
        allow_none=True,
        allow_nan=False,
        validate=validate.Range(min=-180, max=180),
    )

    @validates_schema
    def _pair(self, data, **kwargs):
        if (data.get("lat") is None) != (data.get("lng") is None):
            raise ValidationError("Give both lat and lng, or neither.", "lat")

    @post_load
    def _upper(self, data, **kwargs):
        data["country"] = data["country"].upper()
        return data


class NodeCreateSchema(BaseSchema):
    name = Text(
        min_length=1,
        max_length=NAME_MAX,
        load_default=None,
        metadata={"description": "Default: the GPUs, such as `2x RTX 4090`."},
    )
    specs = fields.Nested(SpecsSchema, required=True)
    pricing = fields.Nested(PricingSchema, required=True)
    location = fields.Nested(LocationSchema, required=True)

    @post_load
    def _default_name(self, data, **kwargs):
        if data.get("name") is None:
            # Derived from fields with their own bounds, so it must be cut to fit the column.
            specs = data["specs"]
            data["name"] = f"{specs['gpu_count']}x {specs['gpu_model']}"[:NAME_MAX].rstrip()
        return data


class NodeUpdateSchema(BaseSchema):
    name = Text(min_length=1, max_length=NAME_MAX)
    pricing = fields.Nested(PricingSchema)
    location = fields.Nested(LocationSchema)
    status = Text(
        max_length=16,
        validate=validate.OneOf(
            ["online", "maintenance"],
            error="Hosts can only switch a node between 'online' and 'maintenance'.",
        ),
    )
    list_unverified = fields.Boolean(
        metadata={
            "description": "Offer the node even when its last self-test failed (shown with "
            "verified: false and its measured figures)."
        }
    )

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError(
                "Give at least one of name, pricing, location, status, list_unverified.",
                "_schema",
            )


class NodeSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    status = fields.Enum(NodeStatus, by_value=True)
    specs = fields.Dict()
    pricing = fields.Dict()
    location = fields.Dict()
    detected_specs = fields.Dict(allow_none=True)
    verified = fields.Boolean()
    draining = fields.Boolean()
    maintenance = fields.Boolean()
    last_seen_at = fields.DateTime(format="iso", allow_none=True)
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")
    measured_specs = fields.Dict(
        allow_none=True,
        metadata={"description": "The last self-test's figures, when its proof held."},
    )
    self_test_failed = fields.Boolean()
    list_unverified = fields.Boolean()
    reliability = fields.Nested(
        "NodeReliabilitySchema",
        metadata={"description": "Only on GET /nodes/{id}: the score and its inputs."},
    )


class NodeReliabilitySchema(Schema):
    score = fields.Float(metadata={"description": "online_seconds / tracked_seconds, 4 places."})
    window_days = fields.Integer()
    online_seconds = fields.Integer()
    tracked_seconds = fields.Integer(
        metadata={"description": "The window since registration, less announced maintenance."}
    )
    maintenance_seconds = fields.Integer(
        metadata={"description": "Announced maintenance inside the window (not counted)."}
    )
    fresh = fields.Boolean(metadata={"description": "Registered less than one window ago."})
    computed_at = fields.DateTime(format="iso")


class NodeCreatedSchema(Schema):
    node = fields.Nested(NodeSchema)
    api_key = fields.String(metadata={"description": "Shown once; store it on the host."})


class ApiKeySchema(Schema):
    api_key = fields.String()
    prefix = fields.String()
    created_at = fields.DateTime(format="iso")


class NodeListSchema(Schema):
    items = fields.List(fields.Nested(NodeSchema))
    next_cursor = fields.String(allow_none=True)


class NodeMetricsArgsSchema(BaseSchema):
    since = Text(
        max_length=16,
        load_default="1h",
        metadata={"description": "How far back: a whole number and s, m, h, d or w (at most 90d)."},
    )
    every = Text(
        max_length=16,
        load_default=None,
        metadata={
            "description": "Bucket width, same form (at least 5s; at most 1000 buckets). "
            "Default: about 300 buckets, at least 1m."
        },
    )

    @validates_schema
    def _window(self, data, **kwargs):
        try:
            since = parse_duration(data["since"])
        except ValueError:
            raise ValidationError(
                "Expected a duration such as 90s, 15m, 1h, 7d or 2w.", "since"
            ) from None
        if since > MAX_SINCE_SECONDS:
            raise ValidationError("At most 90d.", "since")
        if data.get("every") is not None:
            try:
                every = parse_duration(data["every"])
            except ValueError:
                raise ValidationError(
                    "Expected a duration such as 30s, 1m or 1h.", "every"
                ) from None
            if every < MIN_EVERY_SECONDS:
                raise ValidationError(f"At least {MIN_EVERY_SECONDS}s.", "every")
            if every > since:
                raise ValidationError("Must not exceed since.", "every")
            if since // every > MAX_POINTS:
                raise ValidationError(f"At most {MAX_POINTS} buckets: widen every.", "every")

    @post_load
    def _seconds(self, data, **kwargs):
        data["since_seconds"] = parse_duration(data["since"])
        if data["every"] is None:
            data["every_seconds"] = default_every(data["since_seconds"])
            data["every"] = f"{data['every_seconds']}s"
        else:
            data["every_seconds"] = parse_duration(data["every"])
        return data


class NodeMetricsNodePointSchema(Schema):
    time = fields.DateTime(format="iso")
    cpu_temp = fields.Float(allow_none=True)
    cpu_utilization = fields.Float(allow_none=True)
    ram_usage_mb = fields.Float(allow_none=True)
    disk_usage_gb = fields.Float(allow_none=True)


class NodeMetricsGpuPointSchema(Schema):
    time = fields.DateTime(format="iso")
    gpu_temp = fields.Float(allow_none=True)
    gpu_utilization = fields.Float(allow_none=True)
    gpu_memory_used_mb = fields.Float(allow_none=True)
    gpu_power_w = fields.Float(allow_none=True)


class NodeMetricsGpuSeriesSchema(Schema):
    index = fields.Integer()
    points = fields.List(fields.Nested(NodeMetricsGpuPointSchema))


class NodeMetricsSchema(Schema):
    node_id = fields.UUID()
    since = fields.String()
    every = fields.String()
    node = fields.List(
        fields.Nested(NodeMetricsNodePointSchema),
        metadata={"description": "Node-wide means per bucket, oldest first."},
    )
    gpus = fields.List(
        fields.Nested(NodeMetricsGpuSeriesSchema),
        metadata={"description": "Per-GPU means per bucket, by GPU index."},
    )
