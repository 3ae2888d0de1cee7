"""One error format: every failure is JSON {code, status, message[, errors]} with the right code."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from app.auth.current import admin_required, login_required
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
    TooManyRequests,
    ValidationFailed,
)
from tests.factories import node_payload
from tests.foundation.helpers import app_with, assert_error


@pytest.fixture(scope="module")
def throwaway():
    """An application with routes that exist only to raise each kind of error."""
    application = app_with()

    @application.route("/test/admin-only")
    @admin_required
    def _admin_only():
        return {"ok": True}

    @application.route("/test/login-only")
    @login_required
    def _login_only():
        return {"ok": True}

    @application.route("/test/boom")
    def _boom():
        raise RuntimeError("secret-internal-detail: password=hunter2 at /srv/app/x.py")

    @application.route("/test/key-error")
    def _key_error():
        return {}["missing"]

    @application.route("/test/raise/<int:code>")
    def _raise(code: int):
        exc = {
            402: PaymentRequired("Not enough credit for one hour of this node."),
            403: Forbidden("Not yours."),
            404: NotFound("No such thing."),
            409: Conflict("Already done."),
            422: ValidationFailed("Bad.", errors={"field": ["Wrong."]}),
            429: TooManyRequests("Slow down.", headers={"Retry-After": "30"}),
            503: ServiceUnavailable("Down."),
        }[code]
        raise exc

    return application.test_client()


def _counts(db) -> tuple[int, ...]:
    from app.auth.models import User
    from app.fleet.models import HostNode, NodeApiKey

    db.rollback()
    return tuple(
        db.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (User, HostNode, NodeApiKey)
    )


def test_malformed_json_is_a_400_without_field_errors(client, user, db):
    before = _counts(db)
    response = client.post(
        "/api/v1/nodes",
        data="{not json",
        headers={**user.headers, "Content-Type": "application/json"},
    )
    body = assert_error(response, 400)
    assert "JSON" in body["message"]
    assert _counts(db) == before


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00",  # not UTF-8
        json.dumps(node_payload()).replace("2,", "1" + "0" * 5000 + ",", 1).encode(),  # huge int
        b"[" * 100_000 + b"]" * 100_000,  # nested past recursion
    ],
    ids=["not-utf8", "integer-beyond-digit-limit", "deeply-nested"],
)
def test_bodies_that_do_not_decode_are_a_400_not_a_500(client, user, db, payload):
    before = _counts(db)
    response = client.post(
        "/api/v1/nodes", data=payload, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 400)
    assert _counts(db) == before


def test_a_missing_token_is_a_401_asking_for_bearer(client):
    response = client.get("/api/v1/me")
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_non_admin_on_an_admin_route_gets_403_and_an_admin_gets_through(
    throwaway, make_user, admin
):
    someone = make_user("user_plain")
    assert_error(throwaway.get("/test/admin-only", headers=someone.headers), 403)
    assert_error(throwaway.get("/test/admin-only"), 401)
    response = throwaway.get("/test/admin-only", headers=admin.headers)
    assert response.status_code == 200 and response.json == {"ok": True}


def test_an_unknown_route_is_a_json_404(client):
    assert_error(client.get("/api/v1/no-such-thing"), 404)
    assert_error(client.get("/no-such-thing"), 404)


def test_another_users_node_is_a_404(client, node, other_user):
    body = assert_error(client.get(f"/api/v1/nodes/{node.id}", headers=other_user.headers), 404)
    assert str(node.id) not in body["message"]


@pytest.mark.parametrize(
    "bad",
    ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00", "'; DROP TABLE users; --"],
)
def test_an_invalid_uuid_in_a_path_is_a_404(client, user, bad):
    assert_error(client.get(f"/api/v1/nodes/{bad}", headers=user.headers), 404)
    assert_error(client.post(f"/api/v1/nodes/{bad}/api-key", headers=user.headers), 404)


def test_a_wrong_method_is_a_405_with_allow(client, user):
    response = client.delete("/api/v1/nodes", headers=user.headers)
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]
    assert_error(client.put("/api/v1/health"), 405)


def test_maintenance_on_a_busy_node_is_a_409_and_changes_nothing(client, node, db):
    from app.enums import NodeStatus
    from app.fleet.models import HostNode
    from app.fleet.state import transition_node

    row = db.get(HostNode, node.id, with_for_update=True)
    transition_node(db, row, NodeStatus.BUSY, reason="test rental")
    db.commit()

    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"status": "maintenance"}, headers=node.owner.headers
    )
    assert_error(response, 409)
    db.expire_all()
    row = db.get(HostNode, node.id)
    assert row.status == NodeStatus.BUSY and row.maintenance is False


def test_a_body_over_max_content_length_is_a_413(client, user, db, settings):
    before = _counts(db)
    response = client.post(
        "/api/v1/nodes",
        data=b"x" * (settings.max_content_length + 1),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413)
    assert _counts(db) == before


def test_validation_is_a_422_with_an_error_per_field(client, user, db):
    before = _counts(db)
    payload = node_payload(specs={"gpu_count": "two"}, surprise=True)
    del payload["pricing"]
    response = client.post("/api/v1/nodes", json=payload, headers=user.headers)
    body = assert_error(response, 422, errors=True)
    assert body["errors"]["specs"]["gpu_count"]
    assert body["errors"]["pricing"] == ["Missing data for required field."]
    assert body["errors"]["surprise"] == ["Unknown field."]
    assert _counts(db) == before


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(throwaway):
    for path in ("/test/boom", "/test/key-error"):
        response = throwaway.get(path)
        body = assert_error(response, 500)
        text = response.get_data(as_text=True)
        for leak in (
            "secret-internal-detail",
            "hunter2",
            "Traceback",
            "RuntimeError",
            "KeyError",
            "missing",
            ".py",
        ):
            assert leak not in text, body


@pytest.mark.parametrize("code", [402, 403, 404, 409, 422, 429, 503])
def test_domain_errors_raised_anywhere_keep_the_shape(throwaway, code):
    response = throwaway.get(f"/test/raise/{code}")
    assert_error(response, code, errors=code == 422)


def test_a_429_carries_retry_after(throwaway):
    response = throwaway.get("/test/raise/429")
    assert_error(response, 429)
    assert response.headers["Retry-After"] == "30"


def test_a_login_only_route_refuses_an_unknown_scheme(throwaway):
    assert_error(
        throwaway.get("/test/login-only", headers={"Authorization": "Basic dXNlcg=="}), 401
    )
    assert_error(throwaway.get("/test/login-only", headers={"Authorization": "Bearer "}), 401)


def test_errors_for_a_random_node_id_do_not_reveal_existence(client, user):
    missing = assert_error(client.get(f"/api/v1/nodes/{uuid.uuid4()}", headers=user.headers), 404)
    assert missing["message"] == "No such node."


def test_a_real_admin_route_is_403_for_a_plain_user_and_open_to_an_admin(client, user, admin, db):
    from app.billing.models import Transaction

    body = {"user_id": str(user.id), "amount": "5.0000", "reference": "test-403"}
    assert_error(client.post("/api/v1/billing/credits", json=body, headers=user.headers), 403)
    assert_error(client.post("/api/v1/billing/credits", json=body), 401)
    db.rollback()
    assert db.execute(select(func.count()).select_from(Transaction)).scalar_one() == 0
    response = client.post("/api/v1/billing/credits", json=body, headers=admin.headers)
    assert response.status_code not in (401, 403), response.json
