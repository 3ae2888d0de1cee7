"""POST /rentals launch options: what is stored, what start_instance carries, what is refused."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.fleet.commands import pending
from app.rentals import actors
from app.rentals.models import Rental
from tests.rentals.helpers import load_rental, rental_body, set_node_status


def ssh_key(tmp_path, name: str = "k", kind: str = "ed25519", bits: int | None = None) -> str:
    path = tmp_path / name
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(path)]
    if bits:
        argv += ["-b", str(bits)]
    subprocess.run(argv, check=True, timeout=60)
    return path.with_suffix(".pub").read_text().strip()


def start_command(node_id) -> dict:
    (frame,) = [json.loads(f) for _e, f in pending(str(node_id))]
    assert frame["event"] == "start_instance"
    return frame["data"]


def rental_count() -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(Rental)).scalar_one()


def test_launch_options_are_kept_and_sent_with_the_account_keys_once_each(
    client, renter, online_node, tmp_path
):
    account_key, own_key = ssh_key(tmp_path, "account"), ssh_key(tmp_path, "own")
    added = client.post(
        "/api/v1/me/ssh-keys", json={"name": "laptop", "public_key": account_key},
        headers=renter.headers,
    )  # fmt: skip
    assert added.status_code == 201, added.json
    node = online_node()
    response = client.post(
        "/api/v1/rentals",
        json=rental_body(
            node.id,
            image="registry.example.com/team/app:1",
            entrypoint=["/bin/sh", "-c"],
            onstart="echo ready\n\tdone",
            ssh_keys=[own_key, account_key],
            registry_auth={"username": "robot", "password": "hunter2-secret"},
            labels={"team": "ml", "run": "7"},
        ),
        headers=renter.headers,
    )
    assert response.status_code == 202, response.json
    rental = response.json["rental"]
    assert "hunter2-secret" not in response.text and "registry_auth" not in rental
    assert rental["labels"] == {"team": "ml", "run": "7"}
    assert (rental["phase"], rental["progress"], rental["failure_code"]) == ("queued", None, None)
    stored = load_rental(rental["id"])
    assert stored.registry_auth_sealed and "hunter2-secret" not in stored.registry_auth_sealed

    actors.provision_rental.fn(rental["id"])
    data = start_command(node.id)
    assert data["entrypoint"] == ["/bin/sh", "-c"]
    assert data["onstart"] == "echo ready\n\tdone"
    assert data["ssh_keys"] == [own_key, account_key]  # the account's copy is not sent twice
    assert data["registry_auth"] == {"username": "robot", "password": "hunter2-secret"}
    assert data["expires_at"]

    actors.on_instance_started.fn(str(node.id), rental["id"], "c0ffee")
    assert load_rental(rental["id"]).registry_auth_sealed is None  # gone once it started


def test_registry_credentials_are_dropped_when_the_rental_fails_with_the_agents_code(
    client, renter, online_node
):
    node = online_node()
    response = client.post(
        "/api/v1/rentals",
        json=rental_body(
            node.id, image="ghcr.io/team/app:1", registry_auth={"username": "u", "password": "p"}
        ),
        headers=renter.headers,
    )
    rental_id = response.json["rental"]["id"]
    actors.provision_rental.fn(rental_id)
    actors.on_instance_failed.fn(
        str(node.id), rental_id, "manifest unknown", failure_code="image_not_found"
    )
    ended = load_rental(rental_id)
    assert (ended.status, ended.failure_code, ended.phase) == (
        "cancelled",
        "image_not_found",
        "ended",
    )
    assert ended.registry_auth_sealed is None
    assert "manifest unknown" in ended.failure_reason


def test_a_pending_rental_on_a_node_gone_offline_is_cancelled_with_node_offline(
    client, renter, online_node
):
    from app.enums import NodeStatus

    node = online_node()
    response = client.post("/api/v1/rentals", json=rental_body(node.id), headers=renter.headers)
    rental_id = response.json["rental"]["id"]
    set_node_status(node.id, NodeStatus.OFFLINE)
    actors.provision_rental.fn(rental_id)
    ended = load_rental(rental_id)
    assert (ended.status, ended.failure_code) == ("cancelled", "node_offline")


def test_labels_filter_the_renters_rentals_and_every_filter_must_match(client, renter, online_node):
    ids = {}
    for name, labels in {"a": {"team": "ml", "env": "prod"}, "b": {"team": "ml"}, "c": {}}.items():
        response = client.post(
            "/api/v1/rentals",
            json=rental_body(online_node().id, labels=labels),
            headers=renter.headers,
        )
        assert response.status_code == 202, response.json
        ids[name] = response.json["rental"]["id"]

    def listed(query: str) -> set[str]:
        response = client.get(f"/api/v1/rentals?{query}", headers=renter.headers)
        assert response.status_code == 200, response.json
        return {r["id"] for r in response.json["items"]}

    assert listed("label=team=ml") == {ids["a"], ids["b"]}
    assert listed("label=team=ml&label=env=prod") == {ids["a"]}
    assert listed("label=team=cv") == set()
    assert len(listed("")) == 3
    for bad in ("label=team", "label=%3Dx", "label=team=a%00b", "&".join(["label=a=b"] * 17)):
        response = client.get(f"/api/v1/rentals?{bad}", headers=renter.headers)
        assert response.status_code == 422, (bad, response.json)


WEAK_RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7" + "A" * 160 + " weak"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onstart", "x" * 4097),
        ("onstart", "é" * 2049),  # 4098 bytes
        ("onstart", "echo \x00 nul"),
        ("onstart", "echo \x1b[31m"),
        ("entrypoint", []),
        ("entrypoint", ["sh\x07"]),
        ("ssh_keys", ["not a key"]),
        ("ssh_keys", [WEAK_RSA]),
        ("ssh_keys", ['command="rm -rf /" ssh-ed25519 AAAA']),
        ("labels", {f"k{i}": "v" for i in range(17)}),
        ("labels", {"bad key": "v"}),
        ("labels", {"k": "v" * 257}),
        ("labels", {"k": "line\nbreak"}),
        ("labels", {"": "v"}),
        ("registry_auth", {"username": "u", "password": "p"}),  # ubuntu: no registry named
        ("registry_auth", {"username": "u"}),
        ("registry_auth", {"username": "u\x00", "password": "p"}),
        ("registry_auth", {"username": "u", "password": "p" * 4097}),
    ],
)
def test_bad_launch_options_are_a_422_and_nothing_is_stored(
    client, renter, online_node, field, value
):
    node = online_node()
    body = rental_body(
        node.id, image="ubuntu:22.04" if field == "registry_auth" else "localhost/busybox:latest"
    )
    if field == "registry_auth" and value.get("password") != "p":
        body["image"] = "registry.example.com/a/b:1"
    body[field] = value
    response = client.post("/api/v1/rentals", json=body, headers=renter.headers)
    assert response.status_code == 422, response.json
    assert field in json.dumps(response.json["errors"])
    assert "p" * 4097 not in response.text
    assert rental_count() == 0


def test_more_ssh_keys_than_a_container_takes_with_the_account_keys_is_a_422(
    client, renter, online_node, tmp_path
):
    keys = [ssh_key(tmp_path, f"k{i}") for i in range(17)]
    for key in keys[:16]:
        added = client.post("/api/v1/me/ssh-keys", json={"public_key": key}, headers=renter.headers)
        assert added.status_code == 201, added.json
    own = [ssh_key(tmp_path, f"own{i}") for i in range(16)]  # 16 + 16 = 32: allowed
    node = online_node()
    ok = client.post(
        "/api/v1/rentals", json=rental_body(node.id, ssh_keys=own), headers=renter.headers
    )
    assert ok.status_code == 202, ok.json
    client.post("/api/v1/me/ssh-keys", json={"public_key": keys[16]}, headers=renter.headers)
    refused = client.post(
        "/api/v1/rentals", json=rental_body(online_node().id, ssh_keys=own), headers=renter.headers
    )
    assert refused.status_code == 422, refused.json
    assert rental_count() == 1
