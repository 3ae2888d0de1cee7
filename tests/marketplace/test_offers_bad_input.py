"""GET /offers: every kind of bad input is a 422 that names the problem, never a 500."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def get(client, user, **params):
    return client.get("/api/v1/offers", query_string=params, headers=user.headers)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_gpu_count": "two"}, "min_gpu_count"),
        ({"min_gpu_count": "1.5"}, "min_gpu_count"),
        ({"min_gpu_count": "-1"}, "min_gpu_count"),
        ({"min_gpu_count": "99999999999999999999"}, "min_gpu_count"),
        ({"min_vram_gb": "-24"}, "min_vram_gb"),
        ({"min_vram_gb": "NaN"}, "min_vram_gb"),
        ({"min_tflops": "Infinity"}, "min_tflops"),
        ({"min_cpu_cores": "1e3"}, "min_cpu_cores"),
        ({"min_ram_gb": "lots"}, "min_ram_gb"),
        ({"min_disk_gb": "1e400"}, "min_disk_gb"),
        ({"min_price": "-0.01"}, "min_price"),
        ({"max_price": "1e99"}, "max_price"),
        ({"min_price": "2", "max_price": "1"}, "min_price"),
        ({"country": "USA"}, "country"),
        ({"country": "1"}, "country"),
        ({"verified": "maybe"}, "verified"),
        ({"near": "91,0"}, "near"),
        ({"near": "0,181"}, "near"),
        ({"near": "52.5"}, "near"),
        ({"near": "north,east"}, "near"),
        ({"near": "nan,0"}, "near"),
        ({"max_distance_km": "100"}, "max_distance_km"),
        ({"near": "0,0", "max_distance_km": "-5"}, "max_distance_km"),
        ({"near": "0,0", "max_distance_km": "1e9"}, "max_distance_km"),
        ({"sort": "cheapest"}, "sort"),
        ({"sort": "distance"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"gpu_model": "x" * 101}, "gpu_model"),
        ({"gpu_model": "rtx\x00"}, "gpu_model"),
        ({"q": "gpu_model=rtx\x00"}, "q"),
        ({"min_gpus": "2"}, "min_gpus"),
        ({"q": "x" * 1001}, "q"),
    ],
)
def test_a_bad_filter_is_a_422_naming_it(client, user, params, field):
    response = get(client, user, **params)
    assert response.status_code == 422, response.json
    assert response.json["code"] == 422
    assert field in response.json["errors"], response.json


@pytest.mark.parametrize(
    ("q", "named"),
    [
        ("colour=red", "colour"),
        ("gpu_count>=two", "gpu_count>=two"),
        ("gpu_count=>2", "=>"),
        ("gpu_count>=", "gpu_count>="),
        ("gpu_count", "gpu_count"),
        ("gpu_model=RTX 4090", "4090"),
        ("gpu_count in [1,2", "[1,2"),
        ("gpu_count in 2", "gpu_count in 2"),
        ("gpu_count=[1,2]", "gpu_count=[1,2]"),
        ("gpu_model<5", "gpu_model<5"),
        ("verified>true", "verified>true"),
        ("verified=perhaps", "verified=perhaps"),
        ("gpu_count>=-3", "gpu_count>=-3"),
        ("reliability>2", "reliability>2"),
        ("hourly_rate<1e999", "hourly_rate<1e999"),
        ("country in [US,,CA]", "[US,,CA]"),
        ("country in []", "[]"),
        ('gpu_model="unterminated', '"unterminated'),
        ("=5", "=5"),
    ],
)
def test_a_bad_query_is_a_422_naming_the_term(client, user, q, named):
    response = get(client, user, q=q)
    assert response.status_code == 422, response.json
    (message,) = response.json["errors"]["q"]
    assert named in message, message


def _encode(values):
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%%",
        _encode({"a": 1}),
        _encode(["x", "price", ["1.0"]]),
        _encode(["x", "price", ["1.0"], "not-a-uuid"]),
        _encode([1, 2, 3, 4]),
        "x" * 600,
    ],
)
def test_a_tampered_cursor_is_a_422(client, user, cursor):
    response = get(client, user, cursor=cursor)
    assert response.status_code == 422, response.json
    assert "cursor" in response.json["errors"]


@pytest.mark.parametrize(
    "key", [["'; DROP TABLE host_nodes; --"], ["NaN"], [1.5], [], [None], ["1", "2"], [True]]
)
def test_a_cursor_with_a_forged_key_is_a_422(client, user, key):
    from app.marketplace.service import build_search

    fingerprint = build_search({"limit": 1, "sort": "price"}, []).fingerprint
    cursor = _encode([fingerprint, "price", key, "00000000-0000-0000-0000-000000000000"])
    response = get(client, user, sort="price", limit=1, cursor=cursor)
    assert response.status_code == 422, response.json
    assert "cursor" in response.json["errors"]


def test_a_forged_distance_key_is_a_422(client, user):
    from app.marketplace.service import build_search

    args = {"limit": 1, "sort": "distance", "near": (1.0, 2.0)}
    fingerprint = build_search(args, []).fingerprint
    for key in (["abc", "1.0"], [-1.0, "1.0"], [1.0, 2.0], [1.0]):
        cursor = _encode([fingerprint, "distance", key, "00000000-0000-0000-0000-000000000000"])
        response = get(client, user, sort="distance", near="1,2", limit=1, cursor=cursor)
        assert response.status_code == 422, (key, response.json)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    q=st.one_of(
        st.text(alphabet=st.sampled_from(list("gpu_count<>=!in[],\"' 0123.-x\\é")), max_size=40),
        st.text(max_size=40),
    )
)
def test_any_query_text_is_answered_with_offers_or_a_422(client, user, q):
    response = get(client, user, q=q)
    assert response.status_code in (200, 422), (q, response.json)
    if response.status_code == 422:
        assert response.json["errors"]["q"]


_PARAMS = [
    "gpu_model",
    "min_gpu_count",
    "min_vram_gb",
    "min_tflops",
    "min_cpu_cores",
    "min_ram_gb",
    "min_disk_gb",
    "min_price",
    "max_price",
    "country",
    "near",
    "max_distance_km",
    "verified",
    "sort",
    "limit",
    "cursor",
]


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    params=st.dictionaries(
        st.sampled_from(_PARAMS),
        st.one_of(
            st.text(max_size=12),
            st.integers(-(10**20), 10**20).map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.tuples(st.floats(-200, 200), st.floats(-200, 200)).map(lambda p: f"{p[0]},{p[1]}"),
        ),
        max_size=4,
    )
)
def test_any_filter_values_are_answered_with_offers_or_a_422(client, user, params):
    response = get(client, user, **params)
    assert response.status_code in (200, 422), (params, response.json)
