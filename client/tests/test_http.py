"""The client against a real local HTTP server: errors, retries, idempotency keys, pages."""

from __future__ import annotations

import time
import uuid

import pytest

from dc_client import ApiError, Client, RetryPolicy
from dc_client._http import parse_retry_after

from localserver import RENTAL, Reply, ScriptedServer

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.02, max_retry_after=5)


def client_for(server: ScriptedServer, **kwargs) -> Client:
    kwargs.setdefault("retry", FAST)
    return Client(server.url, "dck_test", **kwargs)


def test_a_validation_error_becomes_one_api_error_with_status_code_message_and_errors(server):
    server.on(
        "POST",
        "/rentals",
        Reply(
            422,
            {
                "code": 422,
                "status": "Unprocessable Entity",
                "message": "Unprocessable Entity",
                "errors": {"json": {"image": ["Missing data for required field."]}},
            },
        ),
    )
    with pytest.raises(ApiError) as caught:
        client_for(server).create_rental("n1", "")
    error = caught.value
    assert (error.status, error.code, error.message) == (422, 422, "Unprocessable Entity")
    assert error.errors == {"json": {"image": ["Missing data for required field."]}}
    assert "image: Missing data for required field." in str(error)


def test_a_not_found_carries_the_apis_message(server):
    server.on(
        "GET",
        "/rentals/nope",
        Reply(404, {"code": 404, "status": "Not Found", "message": "rental not found"}),
    )
    with pytest.raises(ApiError) as caught:
        client_for(server).get_rental("nope")
    assert caught.value.status == 404
    assert caught.value.message == "rental not found"
    assert caught.value.errors == {}


def test_an_answer_that_is_not_json_still_becomes_an_api_error(server):
    server.on("GET", "/me", Reply(502, raw=b"<html><body>Bad Gateway</body></html>"))
    with pytest.raises(ApiError) as caught:
        client_for(server).me()
    assert caught.value.status == 502
    assert "Bad Gateway" in caught.value.message


def test_every_request_carries_the_bearer_key_and_a_user_agent(server):
    server.on("GET", "/billing/balance", Reply(200, {"balance": "12.3400"}))
    assert client_for(server).balance() == {"balance": "12.3400"}
    (seen,) = server.requests_to("GET", "/billing/balance")
    assert seen.headers["authorization"] == "Bearer dck_test"
    assert seen.headers["user-agent"].startswith("dc-client/")


def test_a_429_is_retried_after_the_seconds_retry_after_names(server):
    server.on(
        "GET",
        "/me",
        Reply(
            429,
            {"code": 429, "status": "Too Many Requests", "message": "slow down"},
            {"Retry-After": "1"},
        ),
        Reply(200, {"id": "u1"}),
    )
    started = time.monotonic()
    assert client_for(server).me() == {"id": "u1"}
    assert time.monotonic() - started >= 1.0
    assert len(server.requests_to("GET", "/me")) == 2


def test_a_503_is_retried_with_backoff_until_it_succeeds(server):
    busy = Reply(503, {"code": 503, "status": "Service Unavailable", "message": "busy"})
    server.on("GET", "/billing/balance", busy, busy, Reply(200, {"balance": "1.0000"}))
    assert client_for(server).balance()["balance"] == "1.0000"
    assert len(server.requests_to("GET", "/billing/balance")) == 3


def test_retries_are_bounded_and_the_last_error_is_raised(server):
    server.on(
        "GET", "/me", Reply(503, {"code": 503, "status": "Service Unavailable", "message": "down"})
    )
    with pytest.raises(ApiError) as caught:
        client_for(server).me()
    assert caught.value.status == 503
    assert len(server.requests_to("GET", "/me")) == 1 + FAST.retries


def test_a_retry_after_beyond_the_bound_is_not_waited_out(server):
    server.on(
        "GET",
        "/me",
        Reply(
            429,
            {"code": 429, "status": "Too Many Requests", "message": "later"},
            {"Retry-After": "3600"},
        ),
    )
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        client_for(server).me()
    assert caught.value.status == 429
    assert time.monotonic() - started < 2
    assert len(server.requests_to("GET", "/me")) == 1


def test_a_retried_rent_sends_the_same_idempotency_key_every_time(server):
    busy = Reply(
        503, {"code": 503, "status": "Service Unavailable", "message": "busy"}, {"Retry-After": "0"}
    )
    server.on("POST", "/rentals", busy, busy, Reply(202, {"rental": RENTAL}))
    rental = client_for(server).create_rental("n1", "busybox", ports=[22])
    assert rental["id"] == RENTAL["id"]
    keys = {s.headers["idempotency-key"] for s in server.requests_to("POST", "/rentals")}
    assert len(server.requests_to("POST", "/rentals")) == 3
    (key,) = keys
    assert uuid.UUID(key).version == 4


def test_two_rent_calls_use_two_keys_unless_the_caller_passes_one(server):
    server.on("POST", "/rentals", Reply(202, {"rental": RENTAL}))
    client = client_for(server)
    client.create_rental("n1", "busybox")
    client.create_rental("n1", "busybox")
    client.create_rental("n1", "busybox", idempotency_key="mine")
    keys = [s.headers["idempotency-key"] for s in server.requests_to("POST", "/rentals")]
    assert keys[0] != keys[1]
    assert keys[2] == "mine"


def test_a_rent_that_times_out_is_sent_again_with_the_same_key(server):
    server.on(
        "POST",
        "/rentals",
        Reply(202, {"rental": RENTAL}, delay=1.0),
        Reply(202, {"rental": RENTAL}),
    )
    rental = client_for(server, timeout=0.3).create_rental("n1", "busybox")
    assert rental["status"] == "pending"
    sent = server.requests_to("POST", "/rentals")
    assert len(sent) == 2
    assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]


def test_a_stop_that_times_out_is_not_sent_again_and_raises_a_timeout(server):
    server.on("POST", "/rentals/r1/stop", Reply(202, {"rental": RENTAL}, delay=1.0))
    with pytest.raises(ApiError) as caught:
        client_for(server, timeout=0.3).stop_rental("r1")
    assert (caught.value.status, caught.value.code) == (0, "timeout")
    assert len(server.requests_to("POST", "/rentals/r1/stop")) == 1


def test_a_server_that_is_not_there_is_an_api_error_with_status_0():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", "k", retry=RetryPolicy(retries=1, backoff=0.01))
    with pytest.raises(ApiError) as caught:
        client.me()
    assert (caught.value.status, caught.value.code) == (0, "unreachable")


def test_pagination_follows_next_cursor_to_the_last_page(server):
    pages = {
        None: {"items": [{"id": "1"}, {"id": "2"}], "next_cursor": "c2"},
        "c2": {"items": [{"id": "3"}], "next_cursor": "c3"},
        "c3": {"items": [{"id": "4"}], "next_cursor": None},
    }

    def page(seen):
        cursor = (seen.query.get("cursor") or [None])[0]
        return Reply(200, pages[cursor])

    server.on("GET", "/rentals", page)
    ids = [r["id"] for r in client_for(server).iter_rentals(label=["team=ml", "env=dev"], limit=2)]
    assert ids == ["1", "2", "3", "4"]
    first = server.requests_to("GET", "/rentals")[0]
    assert first.query["label"] == ["team=ml", "env=dev"]
    assert first.query["limit"] == ["2"]


def test_search_sends_the_query_language_and_filters_as_query_parameters(server):
    server.on("GET", "/offers", Reply(200, {"items": [], "next_cursor": None}))
    client_for(server).search_offers(
        "gpu_vram_gb>=24 country in [US,CA]", sort="price", verified=True
    )
    (seen,) = server.requests_to("GET", "/offers")
    assert seen.query["q"] == ["gpu_vram_gb>=24 country in [US,CA]"]
    assert seen.query["sort"] == ["price"]
    assert seen.query["verified"] == ["true"]


def test_unset_fields_are_left_out_of_a_create_body(server):
    server.on("POST", "/rentals", Reply(202, {"rental": RENTAL}))
    client_for(server).create_rental("n1", "busybox", env={"A": "1"}, labels={"team": "ml"})
    (seen,) = server.requests_to("POST", "/rentals")
    assert seen.body == {
        "node_id": "n1",
        "image": "busybox",
        "env": {"A": "1"},
        "labels": {"team": "ml"},
    }


def test_retry_after_as_an_http_date_is_understood():
    now = 1_800_000_000.0
    from email.utils import formatdate

    assert parse_retry_after(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7, abs=1)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("soon") is None
