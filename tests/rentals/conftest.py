from __future__ import annotations

import pytest

from app.enums import NodeStatus
from tests.rentals.helpers import set_node_status


@pytest.fixture
def host(make_user):
    return make_user("user_host", email="host@example.com")


@pytest.fixture
def renter(make_user):
    return make_user("user_renter", email="renter@example.com", balance="100.0000")


@pytest.fixture
def online_node(register_node, host):
    """A registered node whose agent is connected (status online)."""

    def _make(**overrides):
        node = register_node(host, **overrides)
        set_node_status(node.id, NodeStatus.ONLINE)
        return node

    return _make
