"""Offers of shared nodes: each node once, with the GPUs free now and the price of one GPU."""

from __future__ import annotations

from app.enums import NodeStatus
from tests.marketplace.market import add_node


def search(client, user, **params):
    response = client.get("/api/v1/offers", query_string=params, headers=user.headers)
    assert response.status_code == 200, response.json
    response.close()
    return response.json


def by_id(body):
    return {item["node_id"]: item for item in body["items"]}


def test_the_gpu_filters_match_the_gpus_free_now(client, user, other_user):
    shared = str(add_node(other_user.id, gpu_model="H100", gpu_count=8, rate="16", gpus_in_use=5))
    idle = str(add_node(other_user.id, gpu_model="H100", gpu_count=2, rate="3"))
    full = str(add_node(other_user.id, gpu_model="H100", gpu_count=4, rate="6", gpus_in_use=4))
    items = by_id(search(client, user, gpu_model="H100"))
    assert set(items) == {shared, idle}  # a node whose GPUs are all held is not offered
    assert full not in items
    assert (items[shared]["gpu_count"], items[shared]["gpu_free"]) == (8, 3)
    assert items[shared]["price_per_gpu"] == "2.0000"
    assert items[idle]["gpu_free"] == 2 and items[idle]["price_per_gpu"] == "1.5000"
    assert set(by_id(search(client, user, min_gpu_count=3))) == {shared}
    assert set(by_id(search(client, user, min_gpu_count=4))) == set()
    assert set(by_id(search(client, user, q="gpu_count>=3"))) == {shared}
    assert set(by_id(search(client, user, q="num_gpus=2"))) == {idle}
    assert set(by_id(search(client, user, q="gpu_total>=8"))) == {shared}
    assert set(by_id(search(client, user, q="price_per_gpu<1.6"))) == {idle}


def test_sorting_by_price_per_gpu_pages_in_that_order(client, user, other_user):
    # Whole-node prices 16, 3 and 1.8 are 2.00, 1.50 and 1.80 per GPU.
    eight = str(add_node(other_user.id, gpu_count=8, rate="16"))
    two = str(add_node(other_user.id, gpu_count=2, rate="3"))
    one = str(add_node(other_user.id, gpu_count=1, rate="1.8"))
    first = search(client, user, sort="price_per_gpu", limit=2)
    assert [i["node_id"] for i in first["items"]] == [two, one]
    rest = search(client, user, sort="price_per_gpu", limit=2, cursor=first["next_cursor"])
    assert [i["node_id"] for i in rest["items"]] == [eight]
    by_node = [i["node_id"] for i in search(client, user, sort="price")["items"]]
    assert by_node == [one, two, eight]  # `price` stays the whole node's


def test_a_cpu_only_node_is_offered_whole_until_it_is_rented(client, user, other_user):
    cpu = str(add_node(other_user.id, gpu_model="none", gpu_count=0, rate="0.2"))
    rented = str(add_node(other_user.id, gpu_model="none", gpu_count=0, rate="0.2", gpus_in_use=1))
    items = by_id(search(client, user))
    assert rented not in items
    assert items[cpu]["gpu_free"] == 0 and items[cpu]["price_per_gpu"] is None


def test_a_busy_node_is_not_offered(client, user, other_user):
    busy = str(add_node(other_user.id, gpu_count=2, status=NodeStatus.BUSY))
    assert busy not in by_id(search(client, user))
