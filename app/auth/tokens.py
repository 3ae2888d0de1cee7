"""Clerk session-token verification, and development tokens signed with a local key.

Production verifies RS256 tokens with the instance's PEM (`CLERK_JWT_KEY`) or its JWKS
(`CLERK_JWKS_URL`). Development and tests sign tokens with a local RSA key; the platform then
verifies them with that key's public half through exactly the same code.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.errors import DomainError, Unauthorized

LEEWAY_SECONDS = 10
ALGORITHMS = ["RS256"]


@dataclass(frozen=True)
class Claims:
    user_id: str
    email: str | None
    session_id: str | None
    raw: dict[str, Any]


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        if settings.clerk_jwt_key:
            self._key = serialization.load_pem_public_key(settings.clerk_jwt_key.encode())
        elif settings.clerk_jwks_url:
            self._jwks = jwt.PyJWKClient(settings.clerk_jwks_url, cache_keys=True, lifespan=3600)
        elif settings.dev_jwt_private_key:
            self._key = ensure_dev_key(settings.dev_jwt_private_key).public_key()
        else:  # load_settings forbids this outside development
            raise RuntimeError("no key to verify session tokens")

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The session token is malformed.") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized("The session token must be signed with RS256.")
        try:
            key = self._key
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                issuer=self.settings.clerk_issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The session token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The session token is not valid yet.") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The session token was issued by another instance.") from None
        except jwt.PyJWKClientError:
            raise Unauthorized("The session token's signing key is unknown.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The session token is invalid.") from None
        parties = self.settings.clerk_authorized_parties
        if parties and claims.get("azp") not in parties:
            raise Unauthorized("The session token was issued to an unauthorized party.")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255 or not sub.isprintable():
            raise Unauthorized("The session token has no valid subject.")
        sid = claims.get("sid")
        return Claims(
            user_id=sub,
            email=_usable_email(claims.get("email")),
            session_id=sid if isinstance(sid, str) else None,
            raw=claims,
        )


def _usable_email(value: Any) -> str | None:
    """The email claim when it fits the users table; anything else is ignored, not a 500."""
    if isinstance(value, str) and 3 <= len(value) <= 320 and "@" in value and value.isprintable():
        return value
    return None


_lock = threading.Lock()


def ensure_dev_key(path: str) -> rsa.RSAPrivateKey:
    """Load the development signing key, creating it (mode 0600) on first use.

    Processes that start together (test workers, the API and the workers) may all find it
    missing: each writes its own key to a private file and links it into place, which fails
    when another got there first, so every process ends up with the one key that is there."""
    file = Path(path)
    with _lock:
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            try:
                os.link(tmp, file)  # never replaces a key another process put there
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        loaded = serialization.load_pem_private_key(file.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def mint_dev_token(
    settings: Settings,
    user_id: str,
    *,
    email: str | None = None,
    ttl_seconds: int = 24 * 3600,
    azp: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Sign a Clerk-shaped session token with the development key (never in production)."""
    if settings.is_production or not settings.dev_jwt_private_key:
        raise DomainError("development tokens are refused when APP_ENV=production")
    key = ensure_dev_key(settings.dev_jwt_private_key)
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": settings.clerk_issuer,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl_seconds,
        "sid": f"sess_dev_{now}",
        "azp": azp
        or (
            settings.clerk_authorized_parties[0]
            if settings.clerk_authorized_parties
            else "http://localhost:3000"
        ),
    }
    if email:
        claims["email"] = email
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dev"})
