"""GET /me reads the user's row on every request, in one SELECT, and shows what MeSchema shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import delete, text

from app.auth import account
from app.auth.account import Account
from app.auth.models import User
from app.auth.schemas import MeSchema, me_body
from app.db import session_scope
from app.enums import Role
from tests.auth.test_api_keys import create_key
from tests.auth.tokens import bearer, claims, dev_key, sign
from tests.fixtures import set_balance


def test_the_body_is_what_me_schema_dumps():
    shown = Account(
        id=uuid.uuid4(),
        clerk_id="user_schema",
        email=None,
        role=Role.LEASE,
        balance=Decimal("12.34565"),
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )
    for admin in (True, False):
        schema_body = MeSchema().dump({**_fields(shown), "is_admin": admin})
        assert me_body(shown, is_admin=admin) == schema_body


def _fields(shown: Account) -> dict[str, object]:
    return {name: getattr(shown, name) for name in Account.__dataclass_fields__}


def test_a_balance_change_shows_on_the_next_request(client, user):
    assert client.get("/api/v1/me", headers=user.headers).json["balance"] == "0.0000"
    set_balance(user.id, "42.5")
    assert client.get("/api/v1/me", headers=user.headers).json["balance"] == "42.5000"


def test_a_new_email_claim_is_stored_by_the_next_request(client, settings):
    key = dev_key(settings)
    old = sign(claims(settings, "user_moves", email="old@example.com"), key)
    new = sign(claims(settings, "user_moves", email="new@example.com"), key)
    assert client.get("/api/v1/me", headers=bearer(old)).json["email"] == "old@example.com"
    response = client.get("/api/v1/me", headers=bearer(new))
    assert response.status_code == 200, response.json
    assert response.json["email"] == "new@example.com"
    assert client.get("/api/v1/me", headers=bearer(new)).json["email"] == "new@example.com"


def test_a_user_row_deleted_meanwhile_is_created_again_not_a_500(client, settings, user):
    first = client.get("/api/v1/me", headers=user.headers).json
    with session_scope() as session:
        session.execute(delete(User).where(User.id == user.id))
    response = client.get("/api/v1/me", headers=user.headers)
    assert response.status_code == 200, response.json
    assert response.json["clerk_id"] == first["clerk_id"] and response.json["id"] != first["id"]


def test_an_api_key_shows_its_user_and_a_revoked_one_fails_at_once(client, user):
    body = create_key(client, user, scope="read")
    me = client.get("/api/v1/me", headers=bearer(body["api_key"]))
    assert me.status_code == 200, me.json
    assert me.json["id"] == str(user.id)
    revoked = client.delete(f"/api/v1/api-keys/{body['key']['id']}", headers=user.headers)
    assert revoked.status_code == 204
    assert client.get("/api/v1/me", headers=bearer(body["api_key"])).status_code == 401


def test_the_read_pool_survives_its_connections_being_cut(client, user, db):
    assert client.get("/api/v1/me", headers=user.headers).status_code == 200
    # Every connection of the read pool dies, as in a database restart.
    db.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'idle'"
        )
    )
    db.commit()
    response = client.get("/api/v1/me", headers=user.headers)
    assert response.status_code == 200, response.json
    assert response.json["id"] == str(user.id)
    assert account.account_by_id(user.id) is not None


def test_the_account_statement_is_prepared_once_per_connection(client, user):
    pool = account.read_pool()
    pool.engine.dispose()  # from here on, one connection serves these sequential reads
    for _ in range(3):
        found = account.account_by_clerk_id(user.clerk_id)
        assert found is not None and found.id == user.id
    checked = pool.engine.raw_connection()
    try:
        cursor = checked.cursor()
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'dc_%'")
        names = sorted(row[0] for row in cursor.fetchall())
        assert names == ["dc_account_by_clerk_id"]  # prepared once, executed three times
        assert sorted(checked.info["dc_prepared"]) == names
    finally:
        checked.close()


def test_a_column_type_changed_under_the_prepared_statement_is_not_a_500(client, user, db):
    assert client.get("/api/v1/me", headers=user.headers).status_code == 200
    # A migration changes a selected column's type: PostgreSQL refuses the cached plan
    # ("cached plan must not change result type"); the read goes to a fresh connection.
    db.execute(text("ALTER TABLE users ALTER COLUMN email TYPE varchar(400)"))
    db.commit()
    try:
        for _ in range(3):
            response = client.get("/api/v1/me", headers=user.headers)
            assert response.status_code == 200, response.json
            assert response.json["id"] == str(user.id)
    finally:
        db.execute(text("ALTER TABLE users ALTER COLUMN email TYPE varchar(320)"))
        db.commit()
