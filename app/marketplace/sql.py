"""SQL fragments of the offer search: bound parameters, the offer predicate, and distances.

Column names and operators reach the SQL text only from fixed whitelists; every value the
caller gave is a bound parameter (:meth:`SqlFragments.param`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = 2 * math.pi * EARTH_RADIUS_KM / 360
# What a renter may rent now. The partial offer indexes (migration 0005) use exactly this.
# (needs_reconcile and the free GPUs: not in the partial indexes' predicates, which this one
# still implies. A node whose rentals hold every GPU is `busy` once its rentals are provisioned;
# gpus_in_use says so from the moment they are requested.)
OFFER_PREDICATE = (
    "n.status = 'online' AND NOT n.draining AND NOT n.maintenance AND NOT n.needs_reconcile"
    " AND n.gpus_in_use < greatest(n.gpu_count, 1)"
)
# The GPUs free now (0 on a CPU-only node) and the price of one GPU (NULL on a CPU-only node).
GPU_FREE = "greatest(n.gpu_count - n.gpus_in_use, 0)"
PRICE_PER_GPU = "(n.hourly_rate / NULLIF(n.gpu_count, 0))"


@dataclass
class SqlFragments:
    """WHERE fragments and their bound parameters."""

    where: list[str] = field(default_factory=lambda: [OFFER_PREDICATE])
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, value: Any, cast: str = "") -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s{cast}"


def distance_sql(sql: SqlFragments, lat: float, lng: float) -> str:
    """Great-circle distance in km (haversine) from (lat, lng); NULL without coordinates."""
    lat_r = sql.param(math.radians(lat), "::float8")
    lng_r = sql.param(math.radians(lng), "::float8")
    cos_lat = sql.param(math.cos(math.radians(lat)), "::float8")
    node_lat = "radians(n.lat::float8)"
    half = (
        f"power(sin(({node_lat} - {lat_r}) / 2), 2) + {cos_lat} * cos({node_lat})"
        f" * power(sin((radians(n.lng::float8) - {lng_r}) / 2), 2)"
    )
    # least() clamps rounding errors above 1 for asin; it ignores NULLs, hence the CASE.
    return (
        f"(CASE WHEN n.lat IS NULL THEN NULL ELSE "
        f"{2 * EARTH_RADIUS_KM!r} * asin(least(1.0::float8, sqrt({half}))) END)"
    )


def _degrees(value: float, rounding: str) -> Decimal:
    # Decimal bounds keep the comparison numeric-to-numeric, so ix_offers_lat_lng applies.
    return Decimal(repr(value)).quantize(Decimal("0.000001"), rounding=rounding)


def bounding_box(sql: SqlFragments, lat: float, lng: float, km: float) -> str:
    """A lat/lng box that contains the circle of `km` around the point (an index prefilter)."""
    dlat = km / KM_PER_DEGREE
    low_lat, high_lat = lat - dlat, lat + dlat
    box = (
        f"n.lat >= {sql.param(_degrees(max(low_lat, -90.0), ROUND_FLOOR))} AND "
        f"n.lat <= {sql.param(_degrees(min(high_lat, 90.0), ROUND_CEILING))}"
    )
    ratio = math.sin(km / EARTH_RADIUS_KM) / max(math.cos(math.radians(lat)), 1e-12)
    if low_lat <= -90 or high_lat >= 90 or km / EARTH_RADIUS_KM >= math.pi / 2 or ratio >= 1:
        return box  # a pole is inside, or the circle spans every longitude
    dlng = math.degrees(math.asin(ratio))
    west, east = lng - dlng, lng + dlng
    if west < -180:
        west, east, joiner = west + 360, east, "OR"
    elif east > 180:
        west, east, joiner = west, east - 360, "OR"
    else:
        joiner = "AND"
    low = sql.param(_degrees(west, ROUND_FLOOR))
    high = sql.param(_degrees(east, ROUND_CEILING))
    return f"{box} AND (n.lng >= {low} {joiner} n.lng <= {high})"
