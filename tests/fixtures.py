"""Shared fixtures: clients, users with tokens, registered nodes, the database session, the CDI
spec for an agent's fake GPUs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.factories import node_payload
from tests.fake_gpus import installed_cdi_spec


@dataclass
class TestUser:
    clerk_id: str
    token: str
    id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    from app.db import new_session

    session = new_session()
    yield session
    session.rollback()
    session.close()


@pytest.fixture
def make_user(app, client, settings):
    """make_user(clerk_id=None, email=None, balance=None) -> TestUser (row created via /me)."""
    from app.auth.tokens import mint_dev_token

    def _make(
        clerk_id: str | None = None, *, email: str | None = None, balance: str | None = None
    ) -> TestUser:
        clerk_id = clerk_id or f"user_{uuid.uuid4().hex[:12]}"
        token = mint_dev_token(settings, clerk_id, email=email)
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.json
        user = TestUser(clerk_id=clerk_id, token=token, id=uuid.UUID(response.json["id"]))
        if balance is not None:
            set_balance(user.id, balance)
        return user

    return _make


def set_balance(user_id: uuid.UUID, amount: str) -> None:
    """Give a test user credit through a ledger line, so the ledger stays balanced."""
    from decimal import Decimal

    from app.auth.models import User
    from app.billing.models import Transaction
    from app.db import session_scope
    from app.enums import TransactionType

    with session_scope() as session:
        user = session.get(User, user_id, with_for_update=True)
        assert user is not None
        delta = Decimal(amount) - user.balance
        if delta != 0:
            session.add(
                Transaction(
                    user_id=user_id,
                    amount=abs(delta),
                    type=TransactionType.CREDIT if delta > 0 else TransactionType.DEBIT,
                    reference_id=f"test-{uuid.uuid4()}",
                    description="test balance",
                )
            )
            user.balance = Decimal(amount)


@pytest.fixture
def user(make_user):
    return make_user("user_alice", email="alice@example.com")


@pytest.fixture
def other_user(make_user):
    return make_user("user_bob", email="bob@example.com")


@pytest.fixture
def admin(make_user):
    return make_user("test-admin", email="admin@example.com")


@dataclass
class RegisteredNode:
    id: uuid.UUID
    api_key: str
    body: dict[str, Any]
    owner: TestUser


@pytest.fixture
def register_node(client):
    def _register(owner: TestUser, **overrides: Any) -> RegisteredNode:
        response = client.post(
            "/api/v1/nodes", json=node_payload(**overrides), headers=owner.headers
        )
        assert response.status_code == 201, response.json
        body = response.json
        return RegisteredNode(
            id=uuid.UUID(body["node"]["id"]),
            api_key=body["api_key"],
            body=body["node"],
            owner=owner,
        )

    return _register


@pytest.fixture
def node(register_node, user):
    return register_node(user)


@pytest.fixture(scope="session")
def fake_gpu_cdi() -> Iterator[Path]:
    """The CDI spec that lets Podman start containers on an agent's fake GPUs
    (DC_AGENT_FAKE_GPUS): nvidia.com/gpu=<i> sets DC_FAKE_GPU_<i>=<uuid> in it. Needs root."""
    with installed_cdi_spec() as path:
        yield path
