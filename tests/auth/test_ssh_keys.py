"""Account SSH keys: real keys of each accepted kind, everything else refused, one per fingerprint."""

from __future__ import annotations

import base64
import shutil
import subprocess
import warnings
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from sqlalchemy import select

from app.auth.models import SshKey
from app.auth.ssh_keys import InvalidSshKey, account_ssh_keys, validate_ssh_public_key

URL = "/api/v1/me/ssh-keys"


def openssh(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@cache
def real_key(kind: str) -> str:
    """A freshly generated public key in OpenSSH form (made once per kind per run)."""
    if kind == "ed25519":
        return openssh(ed25519.Ed25519PrivateKey.generate().public_key())
    if kind.startswith("ecdsa-"):
        curve = {"256": ec.SECP256R1, "384": ec.SECP384R1, "521": ec.SECP521R1}[kind[-3:]]
        return openssh(ec.generate_private_key(curve()).public_key())
    if kind.startswith("rsa-"):
        bits = int(kind.removeprefix("rsa-"))
        return openssh(rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key())
    if kind == "dsa":
        with warnings.catch_warnings():  # cryptography deprecates writing DSA keys too
            warnings.simplefilter("ignore")
            weak = dsa.generate_private_key(key_size=1024)  # noqa: S505 (refusing it is the point)
            return openssh(weak.public_key())
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "type_name"),
    [
        ("ed25519", "ssh-ed25519"),
        ("ecdsa-256", "ecdsa-sha2-nistp256"),
        ("ecdsa-384", "ecdsa-sha2-nistp384"),
        ("ecdsa-521", "ecdsa-sha2-nistp521"),
        ("rsa-2048", "ssh-rsa"),
    ],
)
def test_real_keys_of_each_accepted_kind_are_added(client, user, kind, type_name):
    public_key = f"{real_key(kind)} me@laptop"

    response = client.post(URL, json={"name": kind, "public_key": public_key}, headers=user.headers)

    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == {"id", "name", "public_key", "fingerprint", "created_at"}
    assert body["name"] == kind
    assert body["public_key"] == public_key
    assert body["public_key"].startswith(type_name + " ")
    assert body["fingerprint"].startswith("SHA256:") and "=" not in body["fingerprint"]


def test_the_fingerprint_is_the_one_ssh_keygen_prints(client, user, tmp_path):
    assert shutil.which("ssh-keygen"), "ssh-keygen is missing (make test installs openssh-client)"
    path = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "made by ssh-keygen", "-f", path],
        check=True,
    )
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]

    response = client.post(
        URL, json={"public_key": (tmp_path / "id_ed25519.pub").read_text()}, headers=user.headers
    )

    assert response.status_code == 201, response.json
    assert response.json["fingerprint"] == printed
    assert response.json["name"] == "made by ssh-keygen"  # the comment, when no name is given
    assert not response.json["public_key"].endswith("\n")


def _body_of(kind: str) -> str:
    return real_key(kind).split(" ")[1]


BAD_KEYS = {
    "rsa 1024": lambda: real_key("rsa-1024"),
    "dss": lambda: real_key("dsa"),
    "garbage": lambda: "this is not a key",
    "garbage base64": lambda: "ssh-ed25519 AAAA!!notbase64",
    "truncated body": lambda: "ssh-ed25519 " + _body_of("ed25519")[:-12],
    "body of another type": lambda: "ssh-rsa " + _body_of("ed25519"),
    "curve not the one named": lambda: "ecdsa-sha2-nistp384 " + _body_of("ecdsa-256"),
    "no body": lambda: "ssh-ed25519",
    "NUL": lambda: real_key("ed25519") + "\x00",
    "NUL in the comment": lambda: real_key("ed25519") + " me\x00@host",
    "two keys": lambda: real_key("ed25519") + "\n" + real_key("ecdsa-256"),
    "tab": lambda: real_key("ed25519").replace(" ", "\t"),
    "command option": lambda: 'command="rm -rf /" ' + real_key("ed25519"),
    "from option": lambda: 'from="10.0.0.1",no-pty ' + real_key("ed25519"),
    "certificate": lambda: "ssh-ed25519-cert-v01@openssh.com " + _body_of("ed25519"),
    "security key": lambda: "sk-ssh-ed25519@openssh.com " + _body_of("ed25519"),
    "private key": lambda: "-----BEGIN OPENSSH PRIVATE KEY-----",
    "comment too long": lambda: real_key("ed25519") + " " + "c" * 300,
    "empty": lambda: "",
    "too long": lambda: "ssh-rsa " + "A" * 9000,
    "not a string": lambda: ["ssh-ed25519", _body_of("ed25519")],
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_anything_but_a_strong_openssh_key_is_422_and_nothing_is_stored(client, user, db, case):
    public_key = BAD_KEYS[case]()

    response = client.post(URL, json={"name": "k", "public_key": public_key}, headers=user.headers)

    assert response.status_code == 422, response.json
    assert response.json["code"] == 422
    assert "public_key" in response.json["errors"]
    assert db.execute(select(SshKey)).first() is None


@pytest.mark.parametrize("name", ["", "n" * 101, "bad\x00name", "line\nbreak", 5])
def test_a_bad_name_is_422(client, user, db, name):
    response = client.post(
        URL, json={"name": name, "public_key": real_key("ed25519")}, headers=user.headers
    )

    assert response.status_code == 422, response.json
    assert "name" in response.json["errors"]
    assert db.execute(select(SshKey)).first() is None


def test_the_same_key_twice_is_409_naming_the_first(client, user):
    first = client.post(
        URL, json={"name": "a", "public_key": real_key("ed25519") + " one"}, headers=user.headers
    )
    second = client.post(
        URL, json={"name": "b", "public_key": real_key("ed25519") + " two"}, headers=user.headers
    )

    assert first.status_code == 201
    assert second.status_code == 409
    assert first.json["id"] in second.json["message"]
    assert len(client.get(URL, headers=user.headers).json["items"]) == 1


def test_two_users_may_each_add_the_same_key(client, user, other_user):
    for owner in (user, other_user):
        response = client.post(
            URL, json={"name": "shared", "public_key": real_key("ed25519")}, headers=owner.headers
        )
        assert response.status_code == 201, response.json


def test_list_and_delete_my_keys_but_never_anothers(client, user, other_user, db):
    mine = client.post(
        URL, json={"name": "mine", "public_key": real_key("ed25519")}, headers=user.headers
    ).json
    theirs = client.post(
        URL,
        json={"name": "theirs", "public_key": real_key("ecdsa-256")},
        headers=other_user.headers,
    ).json

    listed = client.get(URL, headers=user.headers)
    foreign_delete = client.delete(f"{URL}/{theirs['id']}", headers=user.headers)
    own_delete = client.delete(f"{URL}/{mine['id']}", headers=user.headers)

    assert listed.status_code == 200
    assert [k["id"] for k in listed.json["items"]] == [mine["id"]]
    assert listed.json["next_cursor"] is None
    assert foreign_delete.status_code == 404
    assert own_delete.status_code == 204
    assert client.get(URL, headers=user.headers).json["items"] == []
    assert [k["id"] for k in client.get(URL, headers=other_user.headers).json["items"]] == [
        theirs["id"]
    ]
    assert client.delete(f"{URL}/{mine['id']}", headers=user.headers).status_code == 404


def test_an_account_holds_only_so_many_keys(client, user, settings):
    cap = settings.ssh_keys_per_user
    for i in range(cap):
        key = openssh(ed25519.Ed25519PrivateKey.generate().public_key())
        made = client.post(URL, json={"name": f"k{i}", "public_key": key}, headers=user.headers)
        assert made.status_code == 201, made.json

    key = openssh(ed25519.Ed25519PrivateKey.generate().public_key())
    over = client.post(URL, json={"name": "over", "public_key": key}, headers=user.headers)

    assert over.status_code == 409
    assert str(cap) in over.json["message"]


def test_account_keys_are_given_to_rentals_as_authorized_keys_lines(client, user, db):
    for kind in ("ed25519", "rsa-2048"):
        response = client.post(
            URL, json={"name": kind, "public_key": real_key(kind) + " c"}, headers=user.headers
        )
        assert response.status_code == 201, response.json
    db.rollback()

    lines = account_ssh_keys(db, user.id)

    assert lines == [real_key("ed25519") + " c", real_key("rsa-2048") + " c"]


def test_the_validator_normalises_a_pasted_line_and_refuses_weak_keys():
    key = real_key("ecdsa-384")
    blob = base64.b64decode(key.split(" ")[1])

    assert validate_ssh_public_key(f"  {key}   my  comment\n") == f"{key} my comment"
    assert base64.b64decode(validate_ssh_public_key(key).split(" ")[1]) == blob
    with pytest.raises(InvalidSshKey, match="2048"):
        validate_ssh_public_key(real_key("rsa-1024"))
    with pytest.raises(InvalidSshKey, match="Unsupported key type"):
        validate_ssh_public_key(real_key("dsa"))
