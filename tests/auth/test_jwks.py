"""Tokens verified through CLERK_JWKS_URL, against a fake of Clerk's JWKS endpoint on loopback.

Clerk's servers cannot be reached here, so a real HTTP server on 127.0.0.1 stands in for
`<issuer>/.well-known/jwks.json` (a fake at the Clerk boundary). Everything on our side is real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.auth.tokens import OTHER_KEY, bearer, claims, dev_key, sign
from tests.foundation.helpers import app_with, assert_error

CLERK_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "ins_fake_clerk_1"


class FakeClerkJwks:
    """A loopback HTTP server answering GET /.well-known/jwks.json like Clerk's Frontend API."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]):
        jwks = {
            "keys": [
                {
                    **RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
                    "kid": kid,
                    "alg": "RS256",
                    "use": "sig",
                }
                for kid, key in keys.items()
            ]
        }
        body = json.dumps(jwks).encode()
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests += 1
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeClerkJwks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[FakeClerkJwks]:
    with FakeClerkJwks({KID: CLERK_KEY}) as server:
        yield server


@pytest.fixture
def jwks_client(jwks):
    return app_with(CLERK_JWKS_URL=jwks.url).test_client()


def test_a_token_signed_with_a_key_from_the_jwks_is_accepted(jwks_client, jwks, settings):
    token = sign(claims(settings, "user_jwks", email="jwks@example.com"), CLERK_KEY, kid=KID)
    response = jwks_client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert response.json["clerk_id"] == "user_jwks"
    assert jwks.requests >= 1


def test_the_jwks_is_cached_between_requests(jwks_client, jwks, settings):
    token = sign(claims(settings, "user_jwks_cache"), CLERK_KEY, kid=KID)
    for _ in range(5):
        assert jwks_client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert jwks.requests == 1


@pytest.mark.parametrize(
    "case", ["unknown kid", "no kid", "right kid, other key", "development key"]
)
def test_tokens_the_jwks_cannot_vouch_for_are_401(jwks_client, settings, case):
    payload = claims(settings, "user_jwks_bad")
    token = {
        "unknown kid": lambda: sign(payload, CLERK_KEY, kid="ins_unknown"),
        "no kid": lambda: sign(payload, CLERK_KEY, kid=None),
        "right kid, other key": lambda: sign(payload, OTHER_KEY, kid=KID),
        "development key": lambda: sign(payload, dev_key(settings), kid=KID),
    }[case]()
    assert_error(jwks_client.get("/api/v1/me", headers=bearer(token)), 401)


def test_an_unreachable_jwks_is_a_401_not_a_500(settings):
    with FakeClerkJwks({KID: CLERK_KEY}) as server:
        url = server.url
    client = app_with(CLERK_JWKS_URL=url).test_client()
    token = sign(claims(settings, "user_jwks_down"), CLERK_KEY, kid=KID)
    assert_error(client.get("/api/v1/me", headers=bearer(token)), 401)
