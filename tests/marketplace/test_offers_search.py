"""GET /offers on a seeded market: visibility, each filter, the query language, each sort."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.marketplace.market import OFFERED, seed_market


@pytest.fixture
def market(user):
    return seed_market(user.id)


def search(client, user, **params):
    response = client.get("/api/v1/offers", query_string=params, headers=user.headers)
    assert response.status_code == 200, response.json
    response.close()  # as a server does once the body is sent: the cache is filled then
    return response.json


def names(body, market):
    by_id = {str(v): k for k, v in market.items()}
    return [by_id[item["node_id"]] for item in body["items"]]


def test_offers_require_login(client):
    response = client.get("/api/v1/offers")
    assert response.status_code == 401
    assert response.json["code"] == 401


def test_only_online_nodes_that_are_not_draining_or_in_maintenance_are_offered(
    client, user, market
):
    body = search(client, user)
    assert sorted(names(body, market)) == sorted(OFFERED)
    assert body["next_cursor"] is None


def test_an_offer_has_the_contract_fields(client, user, market):
    body = search(client, user, gpu_model="A100")
    (item,) = body["items"]
    assert item == {
        "node_id": str(market["berlin-4xa100"]),
        "gpu_model": "A100 80GB",
        "gpu_count": 4,
        "gpu_vram_gb": 80.0,
        "tflops": 1248.0,
        "cpu_cores": 64,
        "ram_gb": 512.0,
        "disk_gb": 4000.0,
        "hourly_rate": "5.2000",
        "location": {"country": "DE", "city": "Berlin"},
        "verified": True,
        "reliability": None,
        "gpu_free": 4,
        "price_per_gpu": "1.3000",
    }
    from app.marketplace.schemas import OfferListSchema

    assert OfferListSchema().validate(body) == {}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"gpu_model": "4090"}, {"austin-4090", "nyc-2x4090"}),
        ({"gpu_model": "rTx 40"}, {"austin-4090", "nyc-2x4090", "seattle-4080"}),
        ({"min_gpu_count": 2}, {"nyc-2x4090", "berlin-4xa100", "paris-8xh100"}),
        ({"min_vram_gb": 48}, {"berlin-4xa100", "paris-8xh100"}),
        ({"min_tflops": "1000"}, {"berlin-4xa100", "paris-8xh100"}),
        ({"min_cpu_cores": 64}, {"berlin-4xa100", "paris-8xh100", "amsterdam-cpu"}),
        ({"min_ram_gb": 512}, {"berlin-4xa100", "paris-8xh100"}),
        ({"min_disk_gb": 4000}, {"berlin-4xa100", "paris-8xh100"}),
        ({"min_price": "1"}, {"berlin-4xa100", "paris-8xh100"}),
        ({"max_price": "0.40"}, {"austin-4090", "toronto-3090", "seattle-4080"}),
        ({"min_price": "0.3", "max_price": "0.85"}, {"austin-4090", "nyc-2x4090", "seattle-4080"}),
        ({"country": "us"}, {"austin-4090", "nyc-2x4090", "seattle-4080"}),
        ({"verified": "true"}, {"austin-4090", "toronto-3090", "berlin-4xa100"}),
        ({"verified": "false"}, {"nyc-2x4090", "paris-8xh100", "seattle-4080", "amsterdam-cpu"}),
        (
            {"near": "52.52,13.405", "max_distance_km": 1000},
            {"berlin-4xa100", "amsterdam-cpu", "paris-8xh100"},
        ),
        ({"near": "52.52,13.405", "max_distance_km": 600}, {"berlin-4xa100", "amsterdam-cpu"}),
        ({"gpu_model": "4090", "country": "US", "min_gpu_count": 2}, {"nyc-2x4090"}),
    ],
)
def test_each_filter_narrows_the_offers(client, user, market, params, expected):
    assert set(names(search(client, user, **params), market)) == expected


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (
            "gpu_vram_gb>=24 gpu_count>=2 hourly_rate<6 country in [US,DE]",
            {"nyc-2x4090", "berlin-4xa100"},
        ),
        ('gpu_model="RTX 4090"', {"austin-4090", "nyc-2x4090"}),
        ("gpu_model=rtx_4090", {"austin-4090", "nyc-2x4090"}),
        ("gpu_model in [3090, h100]", {"toronto-3090", "paris-8xh100"}),
        ("gpu_model!=4090 gpu_count>0 country=us", {"seattle-4080"}),
        ("verified=true country!=US", {"toronto-3090", "berlin-4xa100"}),
        ("gpu_count in [1,8] tflops > 40", {"austin-4090", "paris-8xh100", "seattle-4080"}),
        ("cpu_cores = 64 ram_gb <= 256", {"amsterdam-cpu"}),
        ("disk_gb<1000 hourly_rate<=0.22", {"toronto-3090"}),
        ("gpu_count == 0", {"amsterdam-cpu"}),
    ],
)
def test_the_query_language_filters_offers(client, user, market, q, expected):
    assert set(names(search(client, user, q=q), market)) == expected


def test_query_terms_combine_with_the_filters(client, user, market):
    body = search(client, user, q="gpu_count>=1", country="US", max_price="0.5")
    assert set(names(body, market)) == {"austin-4090", "seattle-4080"}


def test_sort_by_price_lists_the_cheapest_first(client, user, market):
    body = search(client, user, sort="price")
    assert names(body, market) == [
        "toronto-3090",
        "seattle-4080",
        "austin-4090",
        "nyc-2x4090",
        "amsterdam-cpu",
        "berlin-4xa100",
        "paris-8xh100",
    ]


def test_relevance_without_near_is_the_price_order(client, user, market):
    assert search(client, user)["items"] == search(client, user, sort="price")["items"]


def test_sort_by_minus_price_lists_the_dearest_first(client, user, market):
    body = search(client, user, sort="-price")
    assert names(body, market) == [
        "paris-8xh100",
        "berlin-4xa100",
        "amsterdam-cpu",
        "nyc-2x4090",
        "austin-4090",
        "seattle-4080",
        "toronto-3090",
    ]


def test_sort_by_tflops_lists_the_fastest_first(client, user, market):
    body = search(client, user, sort="tflops")
    assert names(body, market) == [
        "paris-8xh100",
        "berlin-4xa100",
        "nyc-2x4090",
        "austin-4090",
        "seattle-4080",
        "toronto-3090",
        "amsterdam-cpu",
    ]


def test_sort_by_value_lists_the_most_tflops_per_dollar_first(client, user, market):
    body = search(client, user, sort="value")
    ratios = [Decimal(str(i["tflops"])) / Decimal(i["hourly_rate"]) for i in body["items"]]
    assert ratios == sorted(ratios, reverse=True)
    assert names(body, market)[0] == "paris-8xh100"  # 416.6 TFLOPS per dollar
    assert names(body, market)[-1] == "amsterdam-cpu"


def test_sort_by_distance_lists_the_nearest_first_and_nodes_without_coordinates_last(
    client, user, market
):
    body = search(client, user, near="52.52,13.405", sort="distance")
    assert names(body, market) == [
        "berlin-4xa100",
        "amsterdam-cpu",
        "paris-8xh100",
        "nyc-2x4090",
        "toronto-3090",
        "austin-4090",
        "seattle-4080",
    ]
    distances = {
        n: i["distance_km"] for n, i in zip(names(body, market), body["items"], strict=True)
    }
    assert distances["berlin-4xa100"] == 0
    assert 570 < distances["amsterdam-cpu"] < 585  # Berlin-Amsterdam, great circle ~577 km
    assert 870 < distances["paris-8xh100"] < 885  # Berlin-Paris ~878 km
    assert 6370 < distances["nyc-2x4090"] < 6400  # Berlin-New York ~6385 km
    assert distances["seattle-4080"] is None


def test_relevance_with_near_is_nearest_first(client, user, market):
    near = search(client, user, near="40.7,-74.0")
    assert names(near, market)[:3] == ["nyc-2x4090", "toronto-3090", "austin-4090"]
    assert search(client, user, near="40.7,-74.0", sort="distance")["items"] == near["items"]


def test_distance_is_only_reported_when_near_is_given(client, user, market):
    assert all("distance_km" not in i for i in search(client, user)["items"])
    assert all("distance_km" in i for i in search(client, user, near="0,0")["items"])


def test_a_distance_limit_across_the_antimeridian_finds_nodes_on_the_other_side(client, user):
    from tests.marketplace import market as m

    m.CITIES["Fiji"] = ("FJ", -17.7134, 178.0650)
    m.CITIES["Samoa"] = ("WS", -13.7590, -172.1046)
    try:
        fiji = m.add_node(user.id, city="Fiji")
        samoa = m.add_node(user.id, city="Samoa")
    finally:
        del m.CITIES["Fiji"], m.CITIES["Samoa"]
    body = search(client, user, near="-17.7,178.0", max_distance_km=1500)
    assert [i["node_id"] for i in body["items"]] == [str(fiji), str(samoa)]


def test_a_distance_limit_around_a_pole_looks_across_every_longitude(client, user):
    from tests.marketplace import market as m

    m.CITIES["Longyearbyen"] = ("NO", 78.2232, 15.6267)
    try:
        arctic = m.add_node(user.id, city="Longyearbyen")
    finally:
        del m.CITIES["Longyearbyen"]
    # From 85N 170W the way is over the pole: about 1,870 km.
    body = search(client, user, near="85,-170", max_distance_km=2000)
    assert [i["node_id"] for i in body["items"]] == [str(arctic)]
    assert 1800 < body["items"][0]["distance_km"] < 1950
    assert search(client, user, near="85,-170", max_distance_km=1700)["items"] == []


def test_price_change_by_the_host_shows_in_the_next_search(client, user, market, register_node):
    node = register_node(user, pricing={"hourly_rate": "2.0000"})
    from app.enums import NodeStatus
    from tests.marketplace.market import set_status

    set_status(node.id, NodeStatus.ONLINE)
    first = search(client, user, sort="price")
    assert first["items"][0]["node_id"] != str(node.id)
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"pricing": {"hourly_rate": "0.01"}}, headers=user.headers
    )
    assert response.status_code == 200, response.json
    second = search(client, user, sort="price")
    assert second["items"][0] == {
        **second["items"][0],
        "node_id": str(node.id),
        "hourly_rate": "0.0100",
    }
