"""Hand-made session tokens, good and bad, shaped like Clerk's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dev_key(settings: Any) -> rsa.RSAPrivateKey:
    from app.auth.tokens import ensure_dev_key

    return ensure_dev_key(settings.dev_jwt_private_key)


def claims(settings: Any, sub: Any = "user_token", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": sub,
        "iss": settings.clerk_issuer,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "sid": "sess_test",
        "azp": "http://localhost:3000",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sign(
    payload: dict[str, Any], key: Any, *, kid: str | None = "dev", algorithm: str = "RS256"
) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(payload: dict[str, Any]) -> str:
    """An `alg: none` token: header and claims with an empty signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    """HS256 signed with `secret` (the algorithm-confusion attack uses the public key's PEM)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
