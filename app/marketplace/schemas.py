from __future__ import annotations

import math
import re
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from app.marketplace.query import MAX_QUERY_LENGTH
from app.pagination import PageArgsSchema
from app.validation import PlainDecimal, Text

SORTS = ("relevance", "price", "-price", "price_per_gpu", "distance", "tflops", "value")
# Half the Earth's circumference: every point is within this distance of every other.
MAX_DISTANCE_KM = 20_016
_COUNTRY = re.compile(r"^[A-Za-z]{2}$", re.ASCII)


def _decimal(low: int, high: int) -> PlainDecimal:
    return PlainDecimal(low, high, load_default=None)


def _integer(low: int, high: int) -> fields.Integer:
    return fields.Integer(load_default=None, validate=validate.Range(min=low, max=high))


class LatLng(Text):
    """`<lat>,<lng>` in decimal degrees."""

    default_error_messages = {
        "invalid": "Expected '<lat>,<lng>' in decimal degrees, such as 52.52,13.40.",
        "range": "Latitude must be within -90..90 and longitude within -180..180.",
    }

    def __init__(self, **kwargs: Any):
        super().__init__(max_length=64, **kwargs)

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: Any, data: Any, **kwargs: Any
    ) -> tuple[float, float]:
        if not isinstance(value, str) or len(value) > 64:
            raise self.make_error("invalid")
        value = super()._deserialize(value, attr, data, **kwargs)
        parts = value.split(",")
        if len(parts) != 2:
            raise self.make_error("invalid")
        try:
            lat, lng = float(parts[0]), float(parts[1])
        except ValueError:
            raise self.make_error("invalid") from None
        if not (math.isfinite(lat) and math.isfinite(lng)):
            raise self.make_error("invalid")
        if not (-90 <= lat <= 90 and -180 <= lng <= 180):
            raise self.make_error("range")
        return lat, lng


class OfferQueryArgsSchema(PageArgsSchema):
    class Meta:
        unknown = RAISE

    gpu_model = Text(
        min_length=1,
        max_length=100,
        load_default=None,
        metadata={"description": "Case-insensitive, partial match."},
    )
    min_gpu_count = _integer(0, 64)
    min_vram_gb = _decimal(0, 4096)
    min_tflops = _decimal(0, 1_000_000)
    min_cpu_cores = _integer(0, 4096)
    min_ram_gb = _decimal(0, 65536)
    min_disk_gb = _decimal(0, 10_000_000)
    min_price = _decimal(0, 1_000_000_000)
    max_price = _decimal(0, 1_000_000_000)
    country = Text(
        max_length=2,
        load_default=None,
        validate=validate.Regexp(
            _COUNTRY, error="Expected an ISO 3166 alpha-2 country code such as US."
        ),
    )
    near = LatLng(load_default=None, metadata={"description": "`<lat>,<lng>`, e.g. 52.52,13.40"})
    max_distance_km = fields.Float(
        load_default=None,
        allow_nan=False,
        validate=validate.Range(min=0, max=MAX_DISTANCE_KM, min_inclusive=False),
    )
    verified = fields.Boolean(load_default=None)
    q = Text(
        max_length=MAX_QUERY_LENGTH,
        load_default=None,
        metadata={
            "description": "Terms `field op value` separated by spaces, e.g. "
            "`gpu_vram_gb>=24 country in [US,CA]`."
        },
    )
    sort = Text(max_length=16, load_default="relevance", validate=validate.OneOf(SORTS))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("max_distance_km") is not None and data.get("near") is None:
            raise ValidationError("max_distance_km needs near=<lat>,<lng>.", "max_distance_km")
        if data.get("sort") == "distance" and data.get("near") is None:
            raise ValidationError("sort=distance needs near=<lat>,<lng>.", "sort")
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise ValidationError("min_price must not exceed max_price.", "min_price")

    @post_load
    def _upper(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data.get("country"):
            data["country"] = data["country"].upper()
        return data


class OfferLocationSchema(Schema):
    country = fields.String()
    city = fields.String(allow_none=True)


class OfferSchema(Schema):
    node_id = fields.UUID()
    gpu_model = fields.String()
    gpu_count = fields.Integer()
    gpu_vram_gb = fields.Float()
    tflops = fields.Float()
    cpu_cores = fields.Integer()
    ram_gb = fields.Float()
    disk_gb = fields.Float()
    hourly_rate = fields.String(metadata={"description": "Decimal string, 4 places."})
    location = fields.Nested(OfferLocationSchema)
    distance_km = fields.Float(
        metadata={"description": "Only when near is given; null when the node has no coordinates."},
        allow_none=True,
    )
    verified = fields.Boolean()
    gpu_free = fields.Integer(
        metadata={"description": "GPUs no rental holds now (0 on a CPU-only node)."}
    )
    price_per_gpu = fields.String(
        allow_none=True,
        metadata={
            "description": "hourly_rate / gpu_count, 4 places: what one GPU of this node costs "
            "per hour (null on a CPU-only node, which is rented whole)."
        },
    )
    reliability = fields.Float(
        allow_none=True,
        metadata={
            "description": "Uptime fraction over the last 7 days; null until first measured."
        },
    )
    measured = fields.Dict(
        allow_none=True,
        metadata={
            "description": "What the node's last self-test measured ({cpu_cores, cpu_gflops, "
            "ram_gb, disk_gb, disk_write_mbps, tflops, gpu_vram_gb, h2d_gbps, tested_at}); absent "
            "until a run with a valid proof."
        },
    )
    available_until = fields.String(
        allow_none=True,
        metadata={
            "description": "The start of the node's next announced maintenance window (a "
            "rental must accept ending then); absent when none is announced."
        },
    )


class OfferListSchema(Schema):
    items = fields.List(fields.Nested(OfferSchema))
    next_cursor = fields.String(allow_none=True)
