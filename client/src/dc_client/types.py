"""The API's JSON shapes as typed dictionaries (CONTRACT.md and docs/openapi.json).

`total=False` throughout: the platform adds fields over time and some are present only in some
states, so a reader should use `.get()` for anything optional. Money is a decimal string.
"""

from __future__ import annotations

from typing import Any, Generic, TypedDict, TypeVar

T = TypeVar("T")


class Page(TypedDict, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Me(TypedDict, total=False):
    id: str
    email: str | None
    role: str
    balance: str
    created_at: str


class Specs(TypedDict, total=False):
    gpu_model: str
    gpu_count: int
    gpu_vram_gb: float
    tflops: float
    cpu_cores: int
    ram_gb: float
    disk_gb: float
    cuda_version: str | None


class Pricing(TypedDict, total=False):
    hourly_rate: str
    auto_match_market: bool
    min_hourly_rate: str | None


class Location(TypedDict, total=False):
    country: str
    city: str | None
    lat: float | None
    lng: float | None


class Node(TypedDict, total=False):
    id: str
    name: str | None
    status: str
    specs: Specs
    detected_specs: dict[str, Any] | None
    pricing: Pricing
    location: Location
    verified: bool
    draining: bool
    maintenance: bool
    last_seen_at: str | None
    created_at: str
    updated_at: str


class NodeCreated(TypedDict):
    node: Node
    api_key: str


class NodeKey(TypedDict, total=False):
    api_key: str
    prefix: str
    created_at: str


class Offer(TypedDict, total=False):
    node_id: str
    gpu_model: str
    gpu_count: int
    gpu_vram_gb: float
    tflops: float
    cpu_cores: int
    ram_gb: float
    disk_gb: float
    hourly_rate: str
    location: Location
    distance_km: float | None
    verified: bool
    reliability: float
    gpu_free: int
    price_per_gpu: str
    available_until: str | None


class ConnectionInfo(TypedDict, total=False):
    host: str
    ports: dict[str, int]
    ssh: str


class Rental(TypedDict, total=False):
    id: str
    node_id: str
    renter_id: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    ports: list[int]
    status: str
    phase: str
    progress: float | None
    gpu_count: int
    labels: dict[str, str]
    cost_per_hour: str
    cost_so_far: str | None
    credit_minutes_left: int | None
    connection_info: ConnectionInfo | None
    failure_code: str | None
    failure_reason: str | None
    exit_code: int | None
    start_time: str | None
    end_time: str | None
    stop_requested_at: str | None
    created_at: str
    updated_at: str


class Logs(TypedDict):
    lines: list[str]
    truncated: bool


class ApiKey(TypedDict, total=False):
    id: str
    name: str
    scope: str
    prefix: str
    created_at: str
    last_used_at: str | None


class ApiKeyCreated(TypedDict):
    api_key: str
    key: ApiKey


class SshKey(TypedDict, total=False):
    id: str
    name: str
    public_key: str
    fingerprint: str
    created_at: str


class Balance(TypedDict):
    balance: str


class Transaction(TypedDict, total=False):
    id: str
    amount: str
    type: str
    reference_id: str | None
    description: str | None
    created_at: str


class Earning(TypedDict, total=False):
    period: str
    node_id: str
    gross: str
    fee: str
    net: str


class Earnings(TypedDict):
    items: list[Earning]


class Payout(TypedDict, total=False):
    id: str
    amount: str
    status: str
    created_at: str


class Webhook(TypedDict, total=False):
    id: str
    url: str
    events: list[str]
    secret: str
    created_at: str


class Delivery(TypedDict, total=False):
    id: str
    event_id: str
    type: str
    status: str
    attempts: int
    last_status_code: int | None
    next_attempt_at: str | None


class SelfTest(TypedDict, total=False):
    id: str
    status: str
    started_at: str | None
    finished_at: str | None
    measured: dict[str, Any]
    failures: list[Any]


class MaintenanceWindow(TypedDict, total=False):
    id: str
    starts_at: str
    ends_at: str
    reason: str


class Health(TypedDict, total=False):
    status: str
    checks: dict[str, str]
