from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.enums import NodeStatus
from app.money import Money

_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_CUDA = re.compile(r"^\d{1,3}(\.\d{1,3}){0,2}$")


class SpecsSchema(Schema):
    gpu_model = fields.String(required=True, validate=validate.Length(min=1, max=100))
    gpu_count = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=64))
    gpu_vram_gb = fields.Float(required=True, allow_nan=False,
                               validate=validate.Range(min=0, max=4096))
    tflops = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, max=1e6))
    cpu_cores = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=4096))
    ram_gb = fields.Float(required=True, allow_nan=False,
                          validate=validate.Range(min=0, max=65536, min_inclusive=False))
    disk_gb = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, max=1e7))
    cuda_version = fields.String(load_default=None, allow_none=True,
                                 validate=validate.Regexp(_CUDA, error="Expected a version like 12.4."))

    @validates_schema
    def _gpus(self, data, **kwargs):
        if data.get("gpu_count", 0) > 0 and data.get("gpu_vram_gb", 0) <= 0:
            raise ValidationError("A GPU node must declare its VRAM.", "gpu_vram_gb")


class PricingSchema(Schema):
    hourly_rate = Money(required=True)
    auto_match_market = fields.Boolean(load_default=False)
    min_hourly_rate = Money(load_default=None, allow_none=True)

    @validates_schema
    def _floor(self, data, **kwargs):
        floor = data.get("min_hourly_rate")
        if floor is not None and data.get("hourly_rate") is not None and floor > data["hourly_rate"]:
            raise ValidationError("Must not exceed hourly_rate.", "min_hourly_rate")


class LocationSchema(Schema):
    country = fields.String(required=True, validate=validate.Regexp(
        _COUNTRY, error="Expected an ISO 3166 alpha-2 country code such as US."))
    city = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    lat = fields.Float(load_default=None, allow_none=True, allow_nan=False,
                       validate=validate.Range(min=-90, max=90))
    lng = fields.Float(load_default=None, allow_none=True, allow_nan=False,
                       validate=validate.Range(min=-180, max=180))

    @validates_schema
    def _pair(self, data, **kwargs):
        if (data.get("lat") is None) != (data.get("lng") is None):
            raise ValidationError("Give both lat and lng, or neither.", "lat")

    @post_load
    def _upper(self, data, **kwargs):
        data["country"] = data["country"].upper()
        return data


class NodeCreateSchema(Schema):
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=100))
    specs = fields.Nested(SpecsSchema, required=True)
    pricing = fields.Nested(PricingSchema, required=True)
    location = fields.Nested(LocationSchema, required=True)


class NodeUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=100))
    pricing = fields.Nested(PricingSchema)
    location = fields.Nested(LocationSchema)
    status = fields.String(validate=validate.OneOf(
        ["online", "maintenance"],
        error="Hosts can only switch a node between 'online' and 'maintenance'."))

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Give at least one of name, pricing, location, status.", "_schema")


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
