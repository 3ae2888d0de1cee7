"""Admins are the Clerk ids listed in ADMIN_USER_IDS, nobody else."""

from __future__ import annotations

from tests.auth.tokens import bearer, claims, dev_key, sign
from tests.foundation.helpers import app_with


def test_a_user_listed_in_admin_user_ids_is_an_admin(client, admin, user):
    assert client.get("/api/v1/me", headers=admin.headers).json["is_admin"] is True
    assert client.get("/api/v1/me", headers=user.headers).json["is_admin"] is False


def test_admin_rights_follow_the_setting_not_the_user_id(settings):
    client = app_with(ADMIN_USER_IDS="user_ops, user_boss").test_client()
    key = dev_key(settings)
    for clerk_id, expected in (
        ("user_ops", True),
        ("user_boss", True),
        ("test-admin", False),
        ("user_ops2", False),
    ):
        body = client.get("/api/v1/me", headers=bearer(sign(claims(settings, clerk_id), key))).json
        assert body["is_admin"] is expected, clerk_id


def test_no_admin_user_ids_means_no_admins(settings):
    client = app_with(ADMIN_USER_IDS=",").test_client()
    token = sign(claims(settings, "test-admin"), dev_key(settings))
    assert client.get("/api/v1/me", headers=bearer(token)).json["is_admin"] is False


def test_a_token_claiming_admin_rights_is_not_an_admin(client, settings):
    token = sign(
        claims(
            settings,
            "user_claims_admin",
            role="admin",
            is_admin=True,
            public_metadata={"role": "admin"},
        ),
        dev_key(settings),
    )
    assert client.get("/api/v1/me", headers=bearer(token)).json["is_admin"] is False
