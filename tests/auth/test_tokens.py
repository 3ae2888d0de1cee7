"""Session-token verification: every bad token is a 401 JSON error and creates nobody."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from app.auth.models import User
from tests.auth.tokens import (
    OTHER_KEY,
    bearer,
    claims,
    dev_key,
    hs256_with,
    sign,
    unsigned,
)
from tests.foundation.helpers import app_with, assert_error, public_pem


def _users(db) -> int:
    db.rollback()
    return db.execute(select(func.count()).select_from(User)).scalar_one()


def test_a_valid_token_creates_the_user_once_and_then_finds_it(client, settings, db):
    token = sign(claims(settings, "user_valid", email="valid@example.com"), dev_key(settings))
    first = client.get("/api/v1/me", headers=bearer(token))
    assert first.status_code == 200, first.json
    assert first.json["clerk_id"] == "user_valid"
    assert first.json["email"] == "valid@example.com"
    assert first.json["role"] == "both" and first.json["balance"] == "0.0000"
    assert set(first.json) >= {"id", "email", "role", "balance", "created_at"}
    second = client.get("/api/v1/me", headers=bearer(token))
    assert second.json["id"] == first.json["id"]
    assert _users(db) == 1


def _bad_tokens(settings) -> dict[str, str]:
    key = dev_key(settings)
    now = int(time.time())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = sign(claims(settings, "user_bad"), key)
    head, _body, signature = good.split(".")
    return {
        "garbage": "not-a-token",
        "three garbage parts": "a.b.c",
        "non-ascii": "é.é.é",
        "header is not an object": "W10.e30.",
        "truncated": good[:-10],
        "tampered claims": f"{head}.{sign(claims(settings, 'user_evil'), key).split('.')[1]}."
        f"{signature}",
        "expired": sign(
            claims(settings, "user_bad", exp=now - 60, iat=now - 120, nbf=now - 120), key
        ),
        "not valid yet": sign(claims(settings, "user_bad", nbf=now + 60), key),
        "signed with another key": sign(claims(settings, "user_bad"), OTHER_KEY),
        "alg none": unsigned(claims(settings, "user_bad")),
        "alg none, signature kept": unsigned(claims(settings, "user_bad")) + signature,
        "HS256 with the public key (alg confusion)": hs256_with(
            public, claims(settings, "user_bad")
        ),
        "wrong issuer": sign(claims(settings, "user_bad", iss="https://evil.example"), key),
        "no issuer": sign(claims(settings, "user_bad", iss=None), key),
        "missing sub": sign(claims(settings, None), key),
        "empty sub": sign(claims(settings, ""), key),
        "sub not a string": sign(claims(settings, 12345), key),
        "sub too long": sign(claims(settings, "u" * 300), key),
        "sub with a NUL": sign(claims(settings, "user\x00nul"), key),
        "no exp": sign(claims(settings, "user_bad", exp=None), key),
        "exp not a number": sign(claims(settings, "user_bad", exp="tomorrow"), key),
        "RS512 instead of RS256": sign(claims(settings, "user_bad"), key, algorithm="RS512"),
    }


@pytest.fixture(scope="module")
def bad_tokens(settings):
    return _bad_tokens(settings)


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "three garbage parts",
        "non-ascii",
        "header is not an object",
        "truncated",
        "tampered claims",
        "expired",
        "not valid yet",
        "signed with another key",
        "alg none",
        "alg none, signature kept",
        "HS256 with the public key (alg confusion)",
        "wrong issuer",
        "no issuer",
        "missing sub",
        "empty sub",
        "sub not a string",
        "sub too long",
        "sub with a NUL",
        "no exp",
        "exp not a number",
        "RS512 instead of RS256",
    ],
)
def test_a_bad_token_is_a_401_and_creates_no_user(client, db, bad_tokens, case):
    response = client.get("/api/v1/me", headers=bearer(bad_tokens[case]))
    body = assert_error(response, 401)
    assert "Traceback" not in body["message"]
    assert _users(db) == 0


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"]
)
def test_a_missing_or_non_bearer_authorization_is_a_401(client, header):
    assert_error(client.get("/api/v1/me", headers={"Authorization": header}), 401)


def test_every_authenticated_endpoint_refuses_a_bad_token(client, bad_tokens, node):
    headers = bearer(bad_tokens["signed with another key"])
    for method, path, body in [
        ("get", "/api/v1/me", None),
        ("get", "/api/v1/nodes", None),
        ("post", "/api/v1/nodes", {}),
        ("get", f"/api/v1/nodes/{node.id}", None),
        ("patch", f"/api/v1/nodes/{node.id}", {"name": "stolen"}),
        ("post", f"/api/v1/nodes/{node.id}/api-key", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert_error(response, 401)


def test_expiry_and_not_before_allow_a_small_leeway(client, settings):
    now = int(time.time())
    key = dev_key(settings)
    just_expired = sign(claims(settings, "user_leeway", exp=now - 3), key)
    nearly_valid = sign(claims(settings, "user_leeway", nbf=now + 3), key)
    assert client.get("/api/v1/me", headers=bearer(just_expired)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(nearly_valid)).status_code == 200


def test_authorized_parties_are_enforced_when_configured(settings, db):
    client = app_with(
        CLERK_AUTHORIZED_PARTIES="https://app.example, https://admin.example"
    ).test_client()
    key = dev_key(settings)
    for azp in ("https://app.example", "https://admin.example"):
        token = sign(claims(settings, "user_azp", azp=azp), key)
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    for azp in ("https://evil.example", "", None):
        token = sign(claims(settings, "user_azp_bad", azp=azp), key)
        assert_error(client.get("/api/v1/me", headers=bearer(token)), 401)
    db.rollback()
    assert db.execute(select(User).where(User.clerk_id == "user_azp_bad")).first() is None


def test_any_party_is_accepted_when_none_is_configured(client, settings):
    token = sign(
        claims(settings, "user_any_azp", azp="https://whatever.example"), dev_key(settings)
    )
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200


def test_an_offline_pem_from_clerk_verifies_tokens_and_the_dev_key_no_longer_does(
    settings, tmp_path
):
    clerk_pem = public_pem(OTHER_KEY)
    key_file = tmp_path / "clerk.pem"
    key_file.write_text(clerk_pem)
    for configured in (clerk_pem, clerk_pem.replace("\n", "\\n"), str(key_file)):
        client = app_with(CLERK_JWT_KEY=configured).test_client()
        clerk_token = sign(claims(settings, "user_pem"), OTHER_KEY, kid="ins_1")
        assert client.get("/api/v1/me", headers=bearer(clerk_token)).status_code == 200
        dev_token = sign(claims(settings, "user_pem"), dev_key(settings))
        assert_error(client.get("/api/v1/me", headers=bearer(dev_token)), 401)


def test_the_email_claim_is_stored_but_never_taken_from_another_user(client, settings, db):
    key = dev_key(settings)
    first = sign(claims(settings, "user_mail_1", email="shared@example.com"), key)
    second = sign(claims(settings, "user_mail_2", email="shared@example.com"), key)
    assert client.get("/api/v1/me", headers=bearer(first)).json["email"] == "shared@example.com"
    response = client.get("/api/v1/me", headers=bearer(second))
    assert response.status_code == 200
    assert response.json["email"] is None


@pytest.mark.parametrize(
    "email", ["x" * 400 + "@example.com", "nul\x00@example.com", "no-at-sign", 42, ["a@b.c"]]
)
def test_an_unusable_email_claim_is_ignored_not_a_500(client, settings, email):
    token = sign(claims(settings, "user_odd_email", email=email), dev_key(settings))
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert response.json["email"] is None
