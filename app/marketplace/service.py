"""Offer search: filters and the query language turned into one indexed SQL query, keyset
pagination, and pages served through the offers cache (app/marketplace/cache.py).

The search SQL is assembled from fixed fragments: column names and operators come only from
the whitelists below, and every value the caller gave is a bound parameter. PostgreSQL builds
each item's JSON, so a page costs Python almost nothing beyond the round trip.

Functions never commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy.engine import Connection

from app.db import get_engine
from app.errors import ValidationFailed
from app.marketplace.cache import CACHE_PREFIX, CachedSearch, cached_page, raw_key
from app.marketplace.query import QueryError, Term, parse_query
from app.marketplace.sql import GPU_FREE, PRICE_PER_GPU, SqlFragments, bounding_box, distance_sql
from app.pagination import decode_cursor, encode_cursor

log = logging.getLogger(__name__)

# Must match the expression of ix_offers_value.
VALUE_EXPR = "(n.tflops / NULLIF(n.hourly_rate, 0))"
# Must match the expression of ix_offers_price_per_gpu (a CPU-only node: its whole price).
PRICE_PER_GPU_KEY = "(n.hourly_rate / greatest(n.gpu_count, 1))"

# Query-language fields -> SQL (the only column names that reach the SQL text).
# The GPU counts match the GPUs free now: a node with 3 of 8 free is offered for up to 3.
COLUMNS: dict[str, str] = {
    "gpu_count": GPU_FREE,
    "gpu_free": GPU_FREE,
    "num_gpus": GPU_FREE,
    "gpu_total": "n.gpu_count",
    "price_per_gpu": PRICE_PER_GPU,
    "gpu_vram_gb": "n.gpu_vram_gb",
    "tflops": "n.tflops",
    "cpu_cores": "n.cpu_cores",
    "ram_gb": "n.ram_gb",
    "disk_gb": "n.disk_gb",
    "hourly_rate": "n.hourly_rate",
    "country": "n.country",
    "verified": "n.verified",
    "reliability": "r.reliability",
}
OPERATORS: dict[str, str] = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# Filter parameters of GET /offers that are lower bounds, and their columns.
MINIMUMS: dict[str, str] = {
    "min_gpu_count": GPU_FREE,
    "min_vram_gb": "n.gpu_vram_gb",
    "min_tflops": "n.tflops",
    "min_cpu_cores": "n.cpu_cores",
    "min_ram_gb": "n.ram_gb",
    "min_disk_gb": "n.disk_gb",
    "min_price": "n.hourly_rate",
}

# A node whose last self-test failed is offered only when its owner lists it unverified.
LISTED_PREDICATE = "(NOT n.self_test_failed OR n.list_unverified)"
# The start of the node's next announced maintenance window (UTC, ISO 8601), or null.
AVAILABLE_UNTIL = (
    "(SELECT to_char(min(w.starts_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
    "FROM maintenance_windows w WHERE w.node_id = p.id AND w.cancelled_at IS NULL "
    "AND w.finished_at IS NULL AND w.ends_at > now())"
)

# Appended to an item only when present: the self-test's figures and the next maintenance.
OPTIONAL_FIELDS = (
    "coalesce(',\"measured\":' || p.measured_specs::text, '') || "
    f"coalesce(',\"available_until\":\"' || {AVAILABLE_UNTIL} || '\"', '')"
)

_DECIMAL_KEY = re.compile(r"-?\d{1,30}(\.\d{1,40})?", re.ASCII)
_INVALID_CURSOR = {"cursor": ["Invalid cursor."]}


def _like_contains(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ---------------------------------------------------------------------------------------------
# Filters and the query language


def _term_sql(sql: SqlFragments, term: Term) -> str:
    if term.field == "gpu_model":
        if term.op == "in":
            patterns = [_like_contains(v) for v in term.value]
            return f"n.gpu_model ILIKE ANY ({sql.param(patterns)}::text[])"
        contains = f"n.gpu_model ILIKE {sql.param(_like_contains(term.value))} ESCAPE '\\'"
        return contains if term.op == "=" else f"NOT ({contains})"
    column = COLUMNS[term.field]
    if term.op == "in":
        return f"{column} = ANY ({sql.param(list(term.value))})"
    return f"{column} {OPERATORS[term.op]} {sql.param(term.value)}"


def _filters(
    sql: SqlFragments, args: dict[str, Any], terms: list[Term], distance: str | None
) -> None:
    if args.get("gpu_model"):
        sql.where.append(
            f"n.gpu_model ILIKE {sql.param(_like_contains(args['gpu_model']))} ESCAPE '\\'"
        )
    for name, column in MINIMUMS.items():
        if args.get(name) is not None:
            sql.where.append(f"{column} >= {sql.param(args[name])}")
    if args.get("max_price") is not None:
        sql.where.append(f"n.hourly_rate <= {sql.param(args['max_price'])}")
    if args.get("country"):
        sql.where.append(f"n.country = {sql.param(args['country'])}")
    if args.get("verified") is not None:
        sql.where.append("n.verified" if args["verified"] else "NOT n.verified")
    near, max_km = args.get("near"), args.get("max_distance_km")
    if near is not None and distance is not None and max_km is not None:
        sql.where.append(bounding_box(sql, near[0], near[1], max_km))
        sql.where.append(f"{distance} <= {sql.param(float(max_km), '::float8')}")
    sql.where.extend(_term_sql(sql, t) for t in terms)


# ---------------------------------------------------------------------------------------------
# Sorting and keyset pagination


@dataclass(frozen=True)
class SortMode:
    name: str
    descending: bool

    def keys(self, distance: str | None) -> list[str]:
        """The sort key expressions (the node id follows as the tie-breaker)."""
        if self.name == "price":
            return ["n.hourly_rate"]
        if self.name == "price_per_gpu":
            return [PRICE_PER_GPU_KEY]
        if self.name == "tflops":
            return ["n.tflops"]
        if self.name == "value":
            return [VALUE_EXPR]
        assert distance is not None
        return [f"coalesce({distance}, 'Infinity'::float8)", "n.hourly_rate"]

    @property
    def key_casts(self) -> list[str]:
        return ["::float8", ""] if self.name == "distance" else [""]


SORT_MODES = {
    "price": SortMode("price", False),
    "-price": SortMode("price", True),
    "price_per_gpu": SortMode("price_per_gpu", False),
    "tflops": SortMode("tflops", True),
    "value": SortMode("value", True),
    "distance": SortMode("distance", False),
}


def effective_sort(sort: str, near: tuple[float, float] | None) -> str:
    """`relevance`: nearest first when `near` is given (then cheapest), else cheapest first."""
    if sort == "relevance":
        return "distance" if near is not None else "price"
    return sort


def _key_value(value: Any) -> Any:
    """A sort key value as the cursor carries it: exact decimal text, or a float distance."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # no coordinates: sorted last
    return format(Decimal(value), "f")


def _parse_key(mode: SortMode, values: list[Any]) -> list[Any]:
    """Check the key values of a decoded cursor; anything unexpected is a 422."""
    if len(values) != len(mode.key_casts):
        raise ValidationFailed("The cursor is not valid.", errors=_INVALID_CURSOR)
    out: list[Any] = []
    for index, value in enumerate(values):
        if mode.name == "distance" and index == 0:
            if value is None:
                out.append(math.inf)  # nodes without coordinates come last
            elif (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                out.append(float(value))
            else:
                raise ValidationFailed("The cursor is not valid.", errors=_INVALID_CURSOR)
        elif isinstance(value, str) and _DECIMAL_KEY.fullmatch(value):
            out.append(Decimal(value))
        else:
            raise ValidationFailed("The cursor is not valid.", errors=_INVALID_CURSOR)
    return out


# ---------------------------------------------------------------------------------------------
# The search


def parse_terms(q: str | None) -> list[Term]:
    if not q:
        return []
    try:
        return parse_query(q)
    except QueryError as exc:
        message = exc.message
        if exc.term and f"'{exc.term}'" not in message:
            message = f"{message} (in '{exc.term}')"
        raise ValidationFailed(
            f"The query is not valid: {message}", errors={"q": [message]}
        ) from None


def _normalized(args: dict[str, Any], terms: list[Term]) -> dict[str, Any]:
    """The search's identity, independent of how it was spelled (cache key, cursor binding)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in ("limit", "cursor", "q") or value is None:
            continue
        if isinstance(value, Decimal):
            value = format(value.normalize(), "f")
        elif key == "gpu_model":
            value = value.lower()
        elif isinstance(value, tuple):
            value = [repr(float(v)) for v in value]
        elif isinstance(value, float):
            value = repr(value)
        out[key] = value
    out["sort"] = effective_sort(args.get("sort") or "relevance", args.get("near"))
    if terms:
        out["q"] = sorted({t.normalized() for t in terms})
    return out


def _digest(data: Any, size: int) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:size]


@dataclass(frozen=True)
class Search:
    sql: str
    params: dict[str, Any]
    mode: SortMode
    sort_name: str
    fingerprint: str


def build_search(args: dict[str, Any], terms: list[Term]) -> Search:
    """The SQL for one page (limit + 1 rows): (item JSON, sort keys..., id) per row."""
    near: tuple[float, float] | None = args.get("near")
    sort_name = effective_sort(args.get("sort") or "relevance", near)
    mode = SORT_MODES[sort_name]
    fingerprint = _digest(_normalized(args, terms), 16)
    sql = SqlFragments()
    distance = distance_sql(sql, *near) if near is not None else None
    _filters(sql, args, terms, distance)
    sql.where.append(LISTED_PREDICATE)
    if mode.name == "value":
        sql.where.append("n.hourly_rate > 0")
    keys = [*mode.keys(distance), "n.id"]

    after = decode_cursor(args.get("cursor"), (str, str, list, str))
    if after is not None:
        cursor_fingerprint, cursor_sort, key_values, last_id = after
        if cursor_fingerprint != fingerprint or cursor_sort != sort_name:
            raise ValidationFailed(
                "The cursor belongs to a different search.",
                errors={
                    "cursor": ["The cursor belongs to a different search; start again without it."]
                },
            )
        try:
            last = str(uuid.UUID(last_id))
        except ValueError:
            raise ValidationFailed("The cursor is not valid.", errors=_INVALID_CURSOR) from None
        bound = [
            sql.param(v, cast)
            for v, cast in zip(_parse_key(mode, key_values), mode.key_casts, strict=True)
        ]
        bound.append(sql.param(last, "::uuid"))
        compare = "<" if mode.descending else ">"
        sql.where.append(f"({', '.join(keys)}) {compare} ({', '.join(bound)})")

    direction = " DESC" if mode.descending else ""
    sort_columns = [f"{k} AS sort_{i}" for i, k in enumerate(keys[:-1])]
    join = (
        "JOIN node_reliability r ON r.node_id = n.id"
        if any(t.field == "reliability" for t in terms)
        else ""
    )
    inner = (
        "SELECT n.id, n.gpu_model, n.gpu_count, n.gpu_vram_gb, n.tflops, n.cpu_cores, "
        f"{GPU_FREE} AS gpu_free, {PRICE_PER_GPU} AS price_per_gpu, "
        "n.ram_gb, n.disk_gb, n.hourly_rate, n.country, n.location->>'city' AS city, "
        "n.measured_specs, "
        f"n.verified, {distance or 'NULL::float8'} AS distance, {', '.join(sort_columns)} "
        f"FROM host_nodes n {join} WHERE {' AND '.join(sql.where)} "
        f"ORDER BY {', '.join(k + direction for k in keys)} "
        f"LIMIT {sql.param(int(args['limit']) + 1)}"
    )
    distance_item = "round(p.distance::numeric, 2) AS distance_km, " if near is not None else ""
    outer_keys = [f"p.sort_{i}" for i in range(len(keys) - 1)] + ["p.id"]
    # The item in the contract's field order (row_to_json writes compact JSON). Reliability is
    # probed for the page's rows only (a primary-key lookup each).
    statement = (
        f"SELECT (SELECT left(row_to_json(item)::text, -1) || {OPTIONAL_FIELDS} || '}}' "
        "FROM (SELECT p.id AS node_id, p.gpu_model, "
        "p.gpu_count, p.gpu_vram_gb, p.tflops, p.cpu_cores, p.ram_gb, p.disk_gb, "
        "p.hourly_rate::text AS hourly_rate, "
        "(SELECT row_to_json(place) FROM (SELECT p.country, p.city) place) AS location, "
        f"{distance_item}p.verified, "
        "(SELECT r.reliability FROM node_reliability r WHERE r.node_id = p.id) AS reliability, "
        "p.gpu_free, round(p.price_per_gpu, 4)::text AS price_per_gpu"
        f") item), {', '.join(outer_keys)} FROM ({inner}) p "
        f"ORDER BY {', '.join(k + direction for k in outer_keys)}"
    )
    return Search(statement, sql.params, mode, sort_name, fingerprint)


def search_page(connection: Connection, *, args: dict[str, Any]) -> str:
    """One page of offers as JSON text: `{"items": [...], "next_cursor": str | null}`."""
    search = build_search(args, parse_terms(args.get("q")))
    rows = connection.exec_driver_sql(search.sql, search.params).all()
    limit = int(args["limit"])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        key = [_key_value(v) for v in last[1:-1]]
        next_cursor = encode_cursor([search.fingerprint, search.sort_name, key, str(last[-1])])
    return (
        '{"items":['
        + ",".join(row[0] for row in rows)
        + '],"next_cursor":'
        + json.dumps(next_cursor)
        + "}"
    )


# ---------------------------------------------------------------------------------------------
# Cached search (app/marketplace/cache.py keeps the pages and their version)


def cache_key(args: dict[str, Any]) -> str:
    terms = parse_terms(args.get("q"))
    identity = {**_normalized(args, terms), "limit": args["limit"], "cursor": args.get("cursor")}
    return CACHE_PREFIX + _digest(identity, 40)


def search_offers_json(
    *,
    args: dict[str, Any],
    redis_client: redis.Redis,
    ttl_seconds: int,
    connection: Connection | None = None,
    query_string: bytes | None = None,
) -> CachedSearch:
    """The page from the cache when it is current, else from the database (one autocommit
    statement: no BEGIN/ROLLBACK round trips for a read). With the request's `query_string`
    (which `args` were validated from), the page is also stored under it (cache.raw_hit)."""
    return cached_page(
        cache_key(args),
        redis_client=redis_client,
        ttl_seconds=ttl_seconds,
        search=lambda: _run_search(args, connection),
        also_key=None if query_string is None else raw_key(query_string),
    )


def _run_search(args: dict[str, Any], connection: Connection | None) -> str:
    if connection is not None:
        return search_page(connection, args=args)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return search_page(conn, args=args)
