"""User API keys (dck_): create, list, revoke; accepted wherever a session is; scopes; last use."""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import event, select

from app.auth.api_keys import TOUCH_INTERVAL_SECONDS
from app.auth.models import ApiKey
from app.enums import NodeStatus
from app.redis_client import get_redis
from tests.auth.tokens import bearer
from tests.rentals.helpers import load_rental, rental_body, rental_count, set_node_status

URL = "/api/v1/api-keys"


def create_key(client, user, name="ci", scope="full") -> dict:
    response = client.post(URL, json={"name": name, "scope": scope}, headers=user.headers)
    assert response.status_code == 201, response.json
    return response.json


def test_creating_a_key_returns_the_secret_once_with_its_public_details(client, user, db):
    body = create_key(client, user, name="laptop script", scope="read")

    secret = body["api_key"]
    assert secret.startswith("dck_") and len(secret) >= 40
    key = body["key"]
    assert set(key) == {"id", "name", "scope", "prefix", "created_at", "last_used_at"}
    assert key["name"] == "laptop script" and key["scope"] == "read"
    assert secret.startswith(key["prefix"]) and key["prefix"] != secret
    assert key["last_used_at"] is None
    row = db.execute(select(ApiKey).where(ApiKey.id == uuid.UUID(key["id"]))).scalar_one()
    assert row.key_hash != secret and secret not in row.key_hash and len(row.key_hash) == 64


def test_the_list_shows_live_keys_newest_first_and_never_a_secret(client, user):
    first = create_key(client, user, name="one")
    second = create_key(client, user, name="two")

    response = client.get(URL, headers=user.headers)

    assert response.status_code == 200, response.json
    assert [k["id"] for k in response.json["items"]] == [second["key"]["id"], first["key"]["id"]]
    assert response.json["next_cursor"] is None
    text = response.get_data(as_text=True)
    assert first["api_key"] not in text and second["api_key"] not in text
    assert "api_key" not in text and "key_hash" not in text


def test_a_key_acts_as_its_user_on_user_routes(client, user):
    secret = create_key(client, user)["api_key"]

    me = client.get("/api/v1/me", headers=bearer(secret))
    offers = client.get("/api/v1/offers", headers=bearer(secret))

    assert me.status_code == 200, me.json
    assert me.json["id"] == str(user.id)
    assert offers.status_code == 200, offers.json


def test_a_revoked_key_is_refused_at_once_even_after_being_cached(client, user):
    body = create_key(client, user)
    secret = body["api_key"]
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 200  # now cached

    revoked = client.delete(f"{URL}/{body['key']['id']}", headers=user.headers)
    after = client.get("/api/v1/me", headers=bearer(secret))

    assert revoked.status_code == 204
    assert revoked.get_data() == b""
    assert after.status_code == 401
    assert after.json["code"] == 401 and "revoked" in after.json["message"]
    assert client.get(URL, headers=user.headers).json["items"] == []
    again = client.delete(f"{URL}/{body['key']['id']}", headers=user.headers)
    assert again.status_code == 404


def test_unknown_and_malformed_keys_are_401(client, user):
    secret = create_key(client, user)["api_key"]
    tampered = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")

    for token in (tampered, "dck_", "dck_short", "dck_" + "x" * 300):
        response = client.get("/api/v1/me", headers=bearer(token))
        assert response.status_code == 401, (token, response.json)
        assert response.json["code"] == 401


def test_another_users_key_cannot_be_revoked_and_looks_absent(client, user, other_user):
    body = create_key(client, user)

    response = client.delete(f"{URL}/{body['key']['id']}", headers=other_user.headers)

    assert response.status_code == 404
    assert client.get("/api/v1/me", headers=bearer(body["api_key"])).status_code == 200
    assert client.get(URL, headers=other_user.headers).json["items"] == []


def test_a_read_key_gets_403_on_every_api_keys_route(client, user):
    full = create_key(client, user, name="full")
    read = create_key(client, user, name="read", scope="read")["api_key"]

    listing = client.get(URL, headers=bearer(read))
    creating = client.post(URL, json={"name": "x", "scope": "full"}, headers=bearer(read))
    revoking = client.delete(f"{URL}/{full['key']['id']}", headers=bearer(read))

    assert [listing.status_code, creating.status_code, revoking.status_code] == [403, 403, 403]
    assert listing.json["code"] == 403
    assert client.get("/api/v1/me", headers=bearer(full["api_key"])).status_code == 200


def test_a_full_key_can_manage_keys_including_revoking_itself(client, user):
    full = create_key(client, user, name="full")
    headers = bearer(full["api_key"])

    made = client.post(URL, json={"name": "made by a key", "scope": "read"}, headers=headers)
    listed = client.get(URL, headers=headers)
    revoked = client.delete(f"{URL}/{full['key']['id']}", headers=headers)

    assert made.status_code == 201, made.json
    assert {k["name"] for k in listed.json["items"]} == {"full", "made by a key"}
    assert revoked.status_code == 204
    assert client.get(URL, headers=headers).status_code == 401


@pytest.fixture
def rentable_node(make_user, register_node):
    host = make_user("user_host", email="host@example.com")
    node = register_node(host)
    set_node_status(node.id, NodeStatus.ONLINE)
    return node


def test_a_read_key_can_read_rentals_but_not_rent_or_stop(client, make_user, rentable_node):
    from tests.fixtures import set_balance

    renter = make_user("user_renter", email="renter@example.com")
    set_balance(renter.id, "100.0000")
    full = bearer(create_key(client, renter, name="full")["api_key"])
    read = bearer(create_key(client, renter, name="read", scope="read")["api_key"])
    rented = client.post("/api/v1/rentals", json=rental_body(rentable_node.id), headers=full)
    assert rented.status_code == 202, rented.json
    rental_id = rented.json["rental"]["id"]

    denied_rent = client.post("/api/v1/rentals", json=rental_body(rentable_node.id), headers=read)
    denied_stop = client.post(f"/api/v1/rentals/{rental_id}/stop", headers=read)
    listed = client.get("/api/v1/rentals", headers=read)
    shown = client.get(f"/api/v1/rentals/{rental_id}", headers=read)
    head = client.head(f"/api/v1/rentals/{rental_id}", headers=read)

    assert denied_rent.status_code == 403 and denied_rent.json["code"] == 403
    assert "read-only" in denied_rent.json["message"]
    assert denied_stop.status_code == 403
    assert rental_count() == 1
    assert load_rental(rental_id).stop_requested_at is None
    assert listed.status_code == 200 and [r["id"] for r in listed.json["items"]] == [rental_id]
    assert shown.status_code == 200
    assert head.status_code == 200


def test_last_used_at_is_written_once_per_interval_not_per_request(client, user, db):
    from app.db import get_engine

    body = create_key(client, user)
    headers = bearer(body["api_key"])
    updates: list[str] = []

    def count_updates(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            updates.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count_updates)
    try:
        for _ in range(10):
            assert client.get("/api/v1/me", headers=headers).status_code == 200
        first_use = client.get(URL, headers=headers).json["items"][0]["last_used_at"]
        writes_after_burst = len(updates)

        # The gate that elects one writer per interval is a Redis key with that expiry.
        gate = f"dc:api-key-used:{body['key']['id']}"
        assert 0 < get_redis().ttl(gate) <= TOUCH_INTERVAL_SECONDS
        get_redis().delete(gate)  # what the expiry does once the interval has passed
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        second_use = client.get(URL, headers=headers).json["items"][0]["last_used_at"]
    finally:
        event.remove(engine, "before_cursor_execute", count_updates)

    assert writes_after_burst == 1
    assert len(updates) == 2
    assert first_use is not None and second_use is not None and second_use > first_use


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scope": "admin"},
        {"name": "x"},
        {"scope": "full"},
        {"name": "", "scope": "full"},
        {"name": "x" * 101, "scope": "full"},
        {"name": "bad\x00name", "scope": "full"},
        {"name": "two\nlines", "scope": "full"},
        {"name": 7, "scope": "full"},
    ],
)
def test_bad_key_requests_are_422_and_store_nothing(client, user, db, body):
    response = client.post(URL, json=body, headers=user.headers)

    assert response.status_code == 422, response.json
    assert response.json["code"] == 422 and response.json["errors"]
    assert db.execute(select(ApiKey)).first() is None


def test_a_user_may_hold_only_so_many_live_keys(client, user, settings):
    cap = settings.api_keys_per_user
    made = [create_key(client, user, name=f"k{i}") for i in range(cap)]

    over = client.post(URL, json={"name": "one more", "scope": "full"}, headers=user.headers)
    client.delete(f"{URL}/{made[0]['key']['id']}", headers=user.headers)
    after_revoking = client.post(URL, json={"name": "fits", "scope": "read"}, headers=user.headers)

    assert over.status_code == 409
    assert str(cap) in over.json["message"]
    assert after_revoking.status_code == 201, after_revoking.json


def test_a_revoked_key_is_refused_at_once_by_a_running_api_server(client, user):
    from tests.procs import api_server, free_port, running, wait_http

    body = create_key(client, user)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    with running(api_server(port, env={"LOG_LEVEL": "DEBUG"}, name="keys-api")) as (server,):
        wait_http(f"{base}/health", proc=server)
        before = requests.get(f"{base}/me", headers=bearer(body["api_key"]), timeout=10)
        warm = requests.get(f"{base}/me", headers=bearer(body["api_key"]), timeout=10)

        revoked = client.delete(f"{URL}/{body['key']['id']}", headers=user.headers)
        after = requests.get(f"{base}/me", headers=bearer(body["api_key"]), timeout=10)
        listed = requests.get(f"{base}/api-keys", headers=user.headers, timeout=10)
    log = server.log_path.read_text(errors="replace")

    assert before.status_code == 200 and warm.status_code == 200
    assert revoked.status_code == 204
    assert after.status_code == 401
    assert after.json()["code"] == 401
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert body["api_key"] not in log


def test_a_request_that_read_the_key_before_its_revocation_cannot_revive_it(client, user, db):
    from app.auth import api_keys
    from app.auth.keys import hash_key
    from app.db import new_session

    body = create_key(client, user)
    secret = body["api_key"]
    # A request in flight missed the cache and read the row before the revocation...
    stale = api_keys.verify_api_key(db, secret)
    assert client.delete(f"{URL}/{body['key']['id']}", headers=user.headers).status_code == 204
    # ...and fills the cache only after the revocation has committed (identify's last step).
    api_keys._cache_fill(get_redis(), hash_key(secret), stale)

    fresh = api_keys.identify(secret, session=new_session, redis_client=get_redis())
    later = client.get("/api/v1/me", headers=bearer(secret))

    assert stale is not None and stale.user_id == user.id
    assert fresh is None  # the fill did not overwrite the revocation's tombstone
    assert later.status_code == 401


def test_keys_are_checked_in_the_database_when_redis_cannot_answer(client, user, db):
    import redis

    from app.auth.api_keys import identify, revoke_api_key
    from app.auth.models import User
    from app.errors import ServiceUnavailable
    from tests.procs import free_port

    body = create_key(client, user)
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.5)

    found = identify(body["api_key"], session=lambda: db, redis_client=unreachable)
    owner = db.get(User, user.id)
    with pytest.raises(ServiceUnavailable):
        revoke_api_key(
            db, user=owner, key_id=uuid.UUID(body["key"]["id"]), redis_client=unreachable
        )
    db.rollback()

    assert found is not None and found.user_id == user.id and found.scope == "full"
    assert client.get("/api/v1/me", headers=bearer(body["api_key"])).status_code == 200
