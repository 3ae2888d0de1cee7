"""Node registration and management: POST/GET/PATCH /nodes and key rotation."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.auth.node_keys import KEY_PREFIX, verify_key
from app.db import utcnow
from app.enums import NodeStatus
from app.fleet.models import HostNode, NodeApiKey, NodeStatusEvent
from app.pagination import encode_cursor
from tests.factories import node_payload
from tests.foundation.helpers import assert_error


def _counts(db) -> dict[str, int]:
    from app.auth.models import User

    db.rollback()
    return {
        model.__tablename__: db.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (User, HostNode, NodeApiKey, NodeStatusEvent)
    }


def _snapshot(db, node_id) -> dict:
    db.rollback()
    row = db.get(HostNode, node_id, populate_existing=True)
    return {
        "name": row.name,
        "specs": row.specs,
        "pricing": row.pricing,
        "location": row.location,
        "status": row.status,
        "maintenance": row.maintenance,
        "updated_at": row.updated_at,
    }


def _set_status(db, node_id, status: NodeStatus, *, seen_ago: timedelta | None = None) -> None:
    from app.fleet.state import transition_node

    db.rollback()
    row = db.get(HostNode, node_id, with_for_update=True, populate_existing=True)
    if seen_ago is not None:
        row.last_seen_at = utcnow() - seen_ago
    transition_node(db, row, status, reason="test")
    db.commit()


# Registration -----------------------------------------------------------------------------------


def test_registering_a_node_returns_it_with_an_api_key(client, user, db):
    response = client.post("/api/v1/nodes", json=node_payload(), headers=user.headers)
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == {"node", "api_key"}
    assert body["api_key"].startswith(KEY_PREFIX) and len(body["api_key"]) > 40
    node = body["node"]
    assert node["name"] == "rig-1"
    assert node["status"] == "offline"
    assert node["verified"] is False and node["draining"] is False
    assert node["last_seen_at"] is None and node["detected_specs"] is None
    assert node["pricing"] == {"hourly_rate": "1.2000", "auto_match_market": False}
    assert node["specs"]["gpu_model"] == "RTX 4090" and node["specs"]["gpu_count"] == 2
    assert node["location"]["country"] == "US"
    row = db.get(HostNode, uuid.UUID(node["id"]))
    assert row.owner_id == user.id
    assert row.hourly_rate == row.hourly_rate.__class__("1.2000")
    assert row.gpu_count == 2 and row.country == "US"


def test_a_node_without_a_name_is_named_after_its_gpus_and_country_is_upper_cased(client, user):
    payload = node_payload(location={"country": "de"})
    del payload["name"]
    body = client.post("/api/v1/nodes", json=payload, headers=user.headers).json
    assert body["node"]["name"] == "2x RTX 4090"
    assert body["node"]["location"]["country"] == "DE"


def test_a_cpu_only_node_may_declare_no_gpus(client, user):
    payload = node_payload(specs={"gpu_model": "none", "gpu_count": 0, "gpu_vram_gb": 0})
    response = client.post("/api/v1/nodes", json=payload, headers=user.headers)
    assert response.status_code == 201, response.json


# API keys: shown once, stored hashed, verified, rotated -------------------------------------------


def test_the_api_key_is_never_shown_again(client, node):
    listing = client.get("/api/v1/nodes", headers=node.owner.headers)
    single = client.get(f"/api/v1/nodes/{node.id}", headers=node.owner.headers)
    patched = client.patch(
        f"/api/v1/nodes/{node.id}", json={"name": "renamed"}, headers=node.owner.headers
    )
    secret_part = node.api_key[len(KEY_PREFIX) + 12 :]
    for response in (listing, single, patched):
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert node.api_key not in text and secret_part not in text
        assert "api_key" not in text


def test_the_api_key_is_stored_only_as_a_hash(node, db):
    rows = db.execute(select(NodeApiKey).where(NodeApiKey.node_id == node.id)).scalars().all()
    assert len(rows) == 1
    row = rows[0]
    assert row.key_hash == hashlib.sha256(node.api_key.encode()).hexdigest()
    assert node.api_key.startswith(row.prefix) and len(row.prefix) < len(node.api_key) - 20
    assert row.revoked_at is None
    stored = json.dumps([str(getattr(row, c.key)) for c in NodeApiKey.__table__.columns])
    assert node.api_key not in stored
    assert node.api_key[len(row.prefix) :] not in stored


def test_verify_key_accepts_the_key_and_nothing_like_it(node, db):
    key = node.api_key
    assert verify_key(db, key) == node.id
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    for wrong in (
        flipped,  # known prefix, wrong secret
        key[:-5],  # truncated
        key + "x",  # extended
        KEY_PREFIX + "x" * 43,  # unknown prefix
        key.replace(KEY_PREFIX, "dcx_", 1),  # not a node key
        key.upper(),
        "",
        None,
        KEY_PREFIX,
        key + "x" * 200,
    ):
        assert verify_key(db, wrong) is None, wrong


def test_verify_key_compares_the_hash_in_constant_time():
    """Both the known-prefix and unknown-prefix paths hash and compare with hmac.compare_digest."""
    import inspect

    from app.auth import node_keys

    source = inspect.getsource(node_keys.verify_node_key)
    assert source.count("hmac.compare_digest") >= 2
    for shortcut in ("key_hash ==", "== candidate", "candidate ==", "key_hash !=", "!= candidate"):
        assert shortcut not in source


def test_rotating_the_key_stops_the_old_one_at_once_and_starts_the_new_one(client, node, db):
    response = client.post(f"/api/v1/nodes/{node.id}/api-key", headers=node.owner.headers)
    assert response.status_code == 201, response.json
    new_key = response.json["api_key"]
    assert new_key.startswith(KEY_PREFIX) and new_key != node.api_key
    assert new_key.startswith(response.json["prefix"])
    db.rollback()
    assert verify_key(db, node.api_key) is None
    assert verify_key(db, new_key) == node.id

    newest = client.post(f"/api/v1/nodes/{node.id}/api-key", headers=node.owner.headers).json
    db.rollback()
    assert verify_key(db, new_key) is None
    assert verify_key(db, newest["api_key"]) == node.id
    live = db.execute(
        select(func.count())
        .select_from(NodeApiKey)
        .where(NodeApiKey.node_id == node.id, NodeApiKey.revoked_at.is_(None))
    ).scalar_one()
    assert live == 1


def test_another_user_cannot_rotate_my_key(client, node, other_user, db):
    assert_error(client.post(f"/api/v1/nodes/{node.id}/api-key", headers=other_user.headers), 404)
    db.rollback()
    assert verify_key(db, node.api_key) == node.id


def test_each_node_has_its_own_key(register_node, user, db):
    first, second = register_node(user), register_node(user)
    assert verify_key(db, first.api_key) == first.id
    assert verify_key(db, second.api_key) == second.id


# Ownership ---------------------------------------------------------------------------------------


def test_hosts_see_only_their_own_nodes(client, register_node, user, other_user):
    mine = register_node(user)
    theirs = register_node(other_user, name="theirs")
    listed = client.get("/api/v1/nodes", headers=user.headers).json
    assert [item["id"] for item in listed["items"]] == [str(mine.id)]
    assert client.get(f"/api/v1/nodes/{mine.id}", headers=user.headers).status_code == 200
    assert_error(client.get(f"/api/v1/nodes/{theirs.id}", headers=user.headers), 404)


def test_another_users_node_cannot_be_changed_and_looks_like_a_missing_one(
    client, node, other_user, db
):
    before = _snapshot(db, node.id)
    taken = assert_error(
        client.patch(
            f"/api/v1/nodes/{node.id}", json={"name": "mine now"}, headers=other_user.headers
        ),
        404,
    )
    missing = assert_error(
        client.patch(
            f"/api/v1/nodes/{uuid.uuid4()}", json={"name": "x"}, headers=other_user.headers
        ),
        404,
    )
    assert taken["message"] == missing["message"]
    assert _snapshot(db, node.id) == before


# PATCH -------------------------------------------------------------------------------------------


def test_patch_changes_name_pricing_and_location_and_keeps_the_rest(client, node, db):
    from app.marketplace.cache import OFFERS_VERSION_KEY
    from app.redis_client import get_redis

    version = int(get_redis().get(OFFERS_VERSION_KEY) or 0)
    response = client.patch(
        f"/api/v1/nodes/{node.id}",
        headers=node.owner.headers,
        json={
            "name": "rig-renamed",
            "pricing": {"hourly_rate": "2.5", "auto_match_market": True, "min_hourly_rate": "1.0"},
            "location": {"country": "ca", "city": "Toronto"},
        },
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["name"] == "rig-renamed"
    assert body["pricing"] == {
        "hourly_rate": "2.5000",
        "auto_match_market": True,
        "min_hourly_rate": "1.0000",
    }
    assert body["location"] == {"country": "CA", "city": "Toronto"}
    assert body["specs"] == node.body["specs"]
    db.rollback()
    row = db.get(HostNode, node.id)
    assert str(row.hourly_rate) == "2.5000" and row.auto_match_market is True
    assert row.country == "CA" and row.lat is None
    assert int(get_redis().get(OFFERS_VERSION_KEY) or 0) > version


def test_maintenance_takes_an_online_node_out_and_back_in(client, node, db):
    _set_status(db, node.id, NodeStatus.ONLINE, seen_ago=timedelta(seconds=1))
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
    )
    assert response.status_code == 200, response.json
    assert response.json["status"] == "maintenance" and response.json["maintenance"] is True

    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "online"}, headers=node.owner.headers
    )
    assert response.json["status"] == "online" and response.json["maintenance"] is False
    events = (
        db.execute(
            select(NodeStatusEvent.status)
            .where(NodeStatusEvent.node_id == node.id)
            .order_by(NodeStatusEvent.at)
        )
        .scalars()
        .all()
    )
    assert events == [NodeStatus.ONLINE, NodeStatus.MAINTENANCE, NodeStatus.ONLINE]


def test_ending_maintenance_on_a_silent_node_leaves_it_offline(client, node, db):
    _set_status(db, node.id, NodeStatus.ONLINE, seen_ago=timedelta(seconds=1))
    client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
    )
    db.rollback()
    row = db.get(HostNode, node.id, populate_existing=True)
    row.last_seen_at = utcnow() - timedelta(hours=1)
    db.commit()
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "online"}, headers=node.owner.headers
    )
    assert response.json["status"] == "offline" and response.json["maintenance"] is False


def test_maintenance_on_an_offline_node_is_remembered_without_a_status_change(client, node):
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
    )
    assert response.status_code == 200
    assert response.json["status"] == "offline" and response.json["maintenance"] is True


def test_maintenance_on_a_busy_node_is_a_409_and_changes_nothing(client, node, db):
    _set_status(db, node.id, NodeStatus.BUSY)
    before, counts = _snapshot(db, node.id), _counts(db)
    assert_error(
        client.patch(
            f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
        ),
        409,
    )
    assert_error(
        client.patch(
            f"/api/v1/nodes/{node.id}",
            json={"name": "also renamed", "status": "maintenance"},
            headers=node.owner.headers,
        ),
        409,
    )
    assert _snapshot(db, node.id) == before
    assert _counts(db) == counts


# Pagination --------------------------------------------------------------------------------------


def test_nodes_are_listed_newest_first_in_pages(client, register_node, user):
    ids = [str(register_node(user, name=f"rig-{i}").id) for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/nodes", query_string=query, headers=user.headers).json
        pages += 1
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))
    everything = client.get("/api/v1/nodes", headers=user.headers).json
    assert [item["id"] for item in everything["items"]] == seen
    assert everything["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        encode_cursor(["not a time", "6f1c1a52-3f55-4a8e-9d5e-2b7c8e0c1d44"]),
        encode_cursor(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
        encode_cursor([1, 2]),
        encode_cursor(["2026-01-01T00:00:00+00:00"]),
        "x" * 600,
    ],
)
def test_a_tampered_cursor_is_a_422(client, user, cursor):
    response = client.get("/api/v1/nodes", query_string={"cursor": cursor}, headers=user.headers)
    assert_error(response, 422, errors=True)


@pytest.mark.parametrize("limit", ["0", "-1", "201", "ten", "1.5", ""])
def test_a_bad_limit_is_a_422(client, user, limit):
    assert_error(client.get(f"/api/v1/nodes?limit={limit}", headers=user.headers), 422, errors=True)


# Bad input changes nothing -----------------------------------------------------------------------


def _without(path: str) -> dict:
    payload = node_payload()
    section, _, field = path.partition(".")
    if field:
        del payload[section][field]
    else:
        del payload[section]
    return payload


BAD_REGISTRATIONS = {
    "missing specs": _without("specs"),
    "missing pricing": _without("pricing"),
    "missing location": _without("location"),
    "missing gpu_model": _without("specs.gpu_model"),
    "missing hourly_rate": _without("pricing.hourly_rate"),
    "missing country": _without("location.country"),
    "unknown top-level field": node_payload(owner_id=str(uuid.uuid4())),
    "unknown nested field": node_payload(specs={"gpu_serial": "x"}),
    "status is not settable": node_payload(status="online"),
    "verified is not settable": node_payload(verified=True),
    "gpu_count as string": node_payload(specs={"gpu_count": "2"}),
    "gpu_count as float": node_payload(specs={"gpu_count": 2.5}),
    "gpu_count negative": node_payload(specs={"gpu_count": -1}),
    "gpu_count absurd": node_payload(specs={"gpu_count": 10_000}),
    "vram as bool": node_payload(specs={"gpu_vram_gb": True}),
    "vram NaN": node_payload(specs={"gpu_vram_gb": "NaN"}),
    "GPU without VRAM": node_payload(specs={"gpu_vram_gb": 0}),
    "no CPU cores": node_payload(specs={"cpu_cores": 0}),
    "bad cuda version": node_payload(specs={"cuda_version": "twelve"}),
    "specs as list": node_payload(specs=[1, 2]),
    "specs null": node_payload(specs=None),
    "price as float": node_payload(pricing={"hourly_rate": 1.2}),
    "price with 5 places": node_payload(pricing={"hourly_rate": "1.23456"}),
    "negative price": node_payload(pricing={"hourly_rate": "-1"}),
    "floor above price": node_payload(pricing={"min_hourly_rate": "5"}),
    "auto_match as string": node_payload(pricing={"auto_match_market": "maybe"}),
    "country name": node_payload(location={"country": "United States"}),
    "lat without lng": node_payload(location={"lat": 10.0, "lng": None}),
    "lat out of range": node_payload(location={"lat": 91.0}),
    "name too long": node_payload(name="n" * 101),
    "name empty": node_payload(name=""),
    "name as number": node_payload(name=42),
    "body is a list": [node_payload()],
    "body is a string": "rig",
    "body is empty": {},
}


@pytest.mark.parametrize("case", list(BAD_REGISTRATIONS))
def test_a_bad_registration_is_a_422_and_creates_nothing(client, user, db, case):
    before = _counts(db)
    response = client.post("/api/v1/nodes", json=BAD_REGISTRATIONS[case], headers=user.headers)
    assert_error(response, 422, errors=True)
    assert _counts(db) == before


BAD_PATCHES = {
    "empty": {},
    "unknown field": {"owner_id": str(uuid.uuid4())},
    "status busy": {"status": "busy"},
    "status offline": {"status": "offline"},
    "status as bool": {"status": True},
    "name null": {"name": None},
    "name too long": {"name": "n" * 101},
    "partial pricing": {"pricing": {"auto_match_market": True}},
    "float price": {"pricing": {"hourly_rate": 3.0}},
    "bad country": {"location": {"country": "USA"}},
    "specs are not editable": {"specs": {"gpu_count": 8}},
    "verified is not editable": {"verified": True},
    "draining is not editable here": {"draining": True},
    "body is a list": [{"name": "x"}],
}


@pytest.mark.parametrize("case", list(BAD_PATCHES))
def test_a_bad_patch_is_a_422_and_changes_nothing(client, node, db, case):
    before, counts = _snapshot(db, node.id), _counts(db)
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json=BAD_PATCHES[case], headers=node.owner.headers
    )
    assert_error(response, 422, errors=True)
    assert _snapshot(db, node.id) == before
    assert _counts(db) == counts


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/nodes", "{"),
        ("patch", "/api/v1/nodes/{id}", "{"),
        ("post", "/api/v1/nodes", "x" * 2_000_000),
        ("patch", "/api/v1/nodes/{id}", "x" * 2_000_000),
        ("patch", "/api/v1/nodes/{id}", json.dumps({"name": "n" * 1_100_000})),
    ],
)
def test_malformed_and_huge_bodies_are_refused_and_change_nothing(
    client, node, db, method, path, body
):
    before, counts = _snapshot(db, node.id), _counts(db)
    response = getattr(client, method)(
        path.format(id=node.id),
        data=body,
        headers={**node.owner.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413 if len(body) > 1_048_576 else 400)
    assert _snapshot(db, node.id) == before
    assert _counts(db) == counts


@pytest.mark.parametrize(
    "bad_id", ["1", "not-a-uuid", "6f1c1a52-3f55-4a8e-9d5e-2b7c8e0c1d44x", "..%2F..%2Fme"]
)
def test_invalid_uuids_in_paths_are_404_and_change_nothing(client, node, db, bad_id):
    before, counts = _snapshot(db, node.id), _counts(db)
    headers = node.owner.headers
    assert_error(client.get(f"/api/v1/nodes/{bad_id}", headers=headers), 404)
    assert_error(client.patch(f"/api/v1/nodes/{bad_id}", json={"name": "x"}, headers=headers), 404)
    assert_error(client.post(f"/api/v1/nodes/{bad_id}/api-key", headers=headers), 404)
    assert _snapshot(db, node.id) == before
    assert _counts(db) == counts


def test_without_a_token_nothing_is_registered_or_changed(client, node, db):
    before, counts = _snapshot(db, node.id), _counts(db)
    assert_error(client.post("/api/v1/nodes", json=node_payload()), 401)
    assert_error(client.get("/api/v1/nodes"), 401)
    assert_error(client.get(f"/api/v1/nodes/{node.id}"), 401)
    assert_error(client.patch(f"/api/v1/nodes/{node.id}", json={"name": "x"}), 401)
    assert_error(client.post(f"/api/v1/nodes/{node.id}/api-key"), 401)
    assert _snapshot(db, node.id) == before
    assert _counts(db) == counts
    assert verify_key(db, node.api_key) == node.id
