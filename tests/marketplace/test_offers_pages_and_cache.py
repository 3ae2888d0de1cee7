"""GET /offers: keyset pagination that survives changes, and the versioned Redis cache."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.enums import NodeStatus
from tests.marketplace.market import OFFERED, add_node, seed_market, set_status


@pytest.fixture
def market(user):
    return seed_market(user.id)


def search(client, user, **params):
    response = client.get("/api/v1/offers", query_string=params, headers=user.headers)
    assert response.status_code == 200, response.json
    response.close()  # as a server does once the body is sent: the cache is filled then
    return response.json


def all_pages(client, user, **params):
    ids, cursor, pages = [], None, 0
    while True:
        body = search(client, user, **params, **({"cursor": cursor} if cursor else {}))
        ids.extend(i["node_id"] for i in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "price"},
        {"sort": "-price"},
        {"sort": "tflops"},
        {"sort": "value"},
        {"sort": "distance", "near": "52.52,13.405"},
        {"near": "40.7,-74.0"},
        {"q": "cpu_cores>=1"},
    ],
)
def test_pages_cover_every_offer_once_in_the_order_of_one_long_page(client, user, market, params):
    whole = [i["node_id"] for i in search(client, user, limit=200, **params)["items"]]
    paged, pages = all_pages(client, user, limit=2, **params)
    assert paged == whole
    assert len(whole) == len(OFFERED)
    assert pages == 4


def test_equal_prices_are_paged_by_id_without_loss_or_repeat(client, user):
    ids = {str(add_node(user.id, rate="0.5000")) for _ in range(7)}
    paged, _ = all_pages(client, user, limit=3)
    assert sorted(paged) == sorted(ids)


def test_the_next_page_continues_after_the_last_offer_while_offers_change(client, user, market):
    first = search(client, user, sort="price", limit=3)
    seen = [i["node_id"] for i in first["items"]]
    # Meanwhile: an offer already shown is rented, a cheaper one appears, a later one goes away.
    set_status(market["toronto-3090"], NodeStatus.BUSY)
    add_node(user.id, rate="0.0500", name="new-cheap")
    set_status(market["berlin-4xa100"], NodeStatus.OFFLINE)
    second = search(client, user, sort="price", limit=3, cursor=first["next_cursor"])
    rest = [i["node_id"] for i in second["items"]]
    assert not set(rest) & set(seen)
    assert rest == [
        str(market["nyc-2x4090"]),
        str(market["amsterdam-cpu"]),
        str(market["paris-8xh100"]),
    ]
    assert second["next_cursor"] is None


def test_a_cursor_from_another_search_is_refused(client, user, market):
    cursor = search(client, user, sort="price", limit=2)["next_cursor"]
    for params in (
        {"sort": "-price"},
        {"sort": "price", "country": "US"},
        {"sort": "price", "q": "gpu_count>=1"},
    ):
        response = client.get(
            "/api/v1/offers", query_string={**params, "cursor": cursor}, headers=user.headers
        )
        assert response.status_code == 422
        assert "cursor" in response.json["errors"]


def test_a_search_is_answered_from_the_cache_until_a_node_changes(client, user, market, db):
    first = search(client, user, sort="price")
    # A write that bypasses the fleet's change signal is not seen: the answer is cached.
    db.execute(
        text(
            "UPDATE host_nodes SET pricing = jsonb_set(pricing, '{hourly_rate}', "
            "'\"0.0001\"') WHERE id = :id"
        ),
        {"id": market["paris-8xh100"]},
    )
    db.commit()
    assert search(client, user, sort="price") == first
    # Any node change through the fleet bumps the offers version.
    set_status(market["amsterdam-cpu"], NodeStatus.OFFLINE)
    fresh = search(client, user, sort="price")
    assert fresh["items"][0]["node_id"] == str(market["paris-8xh100"])
    assert str(market["amsterdam-cpu"]) not in [i["node_id"] for i in fresh["items"]]


def test_a_node_that_becomes_busy_leaves_cached_results_at_once(client, user, market):
    from app.redis_client import get_redis

    before = search(client, user, gpu_model="4090")
    assert str(market["austin-4090"]) in [i["node_id"] for i in before["items"]]
    assert any(k.startswith("dc:offers:cache:") for k in get_redis().scan_iter("dc:offers:*"))
    set_status(market["austin-4090"], NodeStatus.BUSY)
    after = search(client, user, gpu_model="4090")
    assert [i["node_id"] for i in after["items"]] == [str(market["nyc-2x4090"])]


def test_a_node_that_goes_into_maintenance_leaves_cached_results_at_once(client, user, market):
    search(client, user)
    response = client.patch(
        f"/api/v1/nodes/{market['berlin-4xa100']}",
        json={"status": "maintenance"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.json
    assert str(market["berlin-4xa100"]) not in [i["node_id"] for i in search(client, user)["items"]]


def test_search_still_answers_when_redis_is_unreachable(app, user, market):
    from app.marketplace.service import search_offers_json
    from app.redis_client import get_redis

    unreachable = get_redis("redis://127.0.0.1:1/0")
    page = search_offers_json(
        args={"limit": 50, "sort": "price"}, redis_client=unreachable, ttl_seconds=30
    )
    assert '"hourly_rate":"0.2200"' in page.body
    assert page.store is None


def test_a_drained_node_leaves_cached_results_at_once(client, user, market):
    search(client, user)
    response = client.post(f"/api/v1/nodes/{market['paris-8xh100']}/drain", headers=user.headers)
    assert response.status_code == 202, response.json
    assert str(market["paris-8xh100"]) not in [i["node_id"] for i in search(client, user)["items"]]


def test_through_a_real_server_the_cache_fills_and_a_busy_node_leaves_it(user, market):
    import requests

    from app.redis_client import get_redis
    from tests.procs import api_server, free_port, running, wait_http, wait_until

    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/offers"
    with running(api_server(port, name="marketplace-api")) as (server,):
        wait_http(url, proc=server)  # 401 without a token: it is up

        def offered():
            response = requests.get(
                url, params={"gpu_model": "4090"}, headers=user.headers, timeout=10
            )
            assert response.status_code == 200, response.text
            return [i["node_id"] for i in response.json()["items"]]

        assert str(market["austin-4090"]) in offered()
        wait_until(
            lambda: list(get_redis().scan_iter("dc:offers:cache:*")),
            timeout=5,
            what="the cache to be filled after the answer",
        )
        set_status(market["austin-4090"], NodeStatus.BUSY)
        assert offered() == [str(market["nyc-2x4090"])]


def test_a_query_string_answered_before_is_served_without_validating_it_again(
    client, user, market, db, monkeypatch
):
    from app.marketplace import schemas
    from app.marketplace.cache import raw_key
    from app.redis_client import get_redis

    first = search(client, user, sort="price", gpu_model="4090")
    raw = client.get(
        "/api/v1/offers", query_string={"sort": "price", "gpu_model": "4090"}, headers=user.headers
    ).request.query_string
    assert get_redis().get(raw_key(raw)) is not None
    # The same string again: the argument schema is not run (it would fail here).
    loads = []
    monkeypatch.setattr(
        schemas.OfferQueryArgsSchema, "load", lambda *a, **k: loads.append(a) or 1 / 0
    )
    assert search(client, user, sort="price", gpu_model="4090") == first
    assert loads == []
    # Still behind authentication.
    assert client.get(f"/api/v1/offers?{raw.decode()}").status_code == 401
    monkeypatch.undo()
    # A change through the fleet makes the raw entry stale too.
    set_status(market["austin-4090"], NodeStatus.BUSY)
    after = search(client, user, sort="price", gpu_model="4090")
    assert str(market["austin-4090"]) not in [i["node_id"] for i in after["items"]]


def test_a_refused_query_string_is_never_stored_and_is_refused_every_time(client, user, market):
    from app.marketplace.cache import raw_key
    from app.redis_client import get_redis

    for _ in range(2):
        response = client.get(
            "/api/v1/offers", query_string={"sort": "price", "bogus": "1"}, headers=user.headers
        )
        assert response.status_code == 422, response.json
        raw = response.request.query_string
        response.close()
        assert get_redis().get(raw_key(raw)) is None


def test_two_spellings_of_one_search_share_its_page_and_each_gets_a_raw_entry(client, user, market):
    from app.redis_client import get_redis

    one = search(client, user, sort="price", limit="10")
    other = search(client, user, limit="10", sort="price")  # the same search, spelt otherwise
    assert one == other
    assert len(list(get_redis().scan_iter("dc:offers:cache:raw:*"))) == 2
