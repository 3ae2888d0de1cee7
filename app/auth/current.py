"""Who is calling: the verified user of this request, and the decorators that require one."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from app.auth.models import User
from app.auth.service import get_or_create_user
from app.auth.tokens import Claims, TokenVerifier
from app.errors import Forbidden, Unauthorized
from app.web import db_session

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token(header: str | None = None) -> str | None:
    value = header if header is not None else request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verifier() -> TokenVerifier:
    return current_app.extensions["dc_token_verifier"]


# Clerk ids whose user row is known to exist, with the time they were last confirmed. Lets routes
# that only need "a valid user" (offer search) skip the database entirely on the hot path.
_KNOWN_USERS: dict[str, float] = {}
_KNOWN_TTL_SECONDS = 300.0
_KNOWN_MAX = 100_000


def verified_claims(token: str | None) -> Claims:
    """Verify the token and make sure its user row exists (created on the first valid token)."""
    if token is None:
        raise Unauthorized(
            "Authentication required: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    claims = verifier().verify(token)
    seen = _KNOWN_USERS.get(claims.user_id)
    if seen is None or time.monotonic() - seen > _KNOWN_TTL_SECONDS:
        user = _load_user(claims)
        g.dc_user = user
    return claims


def _load_user(claims: Claims) -> User:
    session = db_session()
    user = get_or_create_user(session, claims)
    session.commit()
    if len(_KNOWN_USERS) >= _KNOWN_MAX:
        _KNOWN_USERS.clear()
    _KNOWN_USERS[claims.user_id] = time.monotonic()
    return user


def authenticate(token: str | None) -> User:
    claims = verified_claims(token)
    user = g.get("dc_user")
    if user is None or user.clerk_id != claims.user_id:
        user = _load_user(claims)
    return user


def current_user() -> User:
    user = g.get("dc_user")
    if user is None:
        user = authenticate(bearer_token())
        g.dc_user = user
    return user


def require_login() -> Claims:
    """Authenticate the request without loading the user row when it is known to exist."""
    claims = g.get("dc_claims")
    if claims is None:
        claims = verified_claims(bearer_token())
        g.dc_claims = claims
    return claims


def is_admin(user: User) -> bool:
    return user.clerk_id in current_app.config["DC_SETTINGS"].admin_user_ids


def login_required(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_login()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def admin_required(fn: F) -> F:
    """Admin-only: anyone else gets 403 (the action exists, they may not use it)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_admin(current_user()):
            raise Forbidden("This action requires an administrator.")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# OpenAPI security requirement for routes that take a Clerk session token.
BEARER_AUTH: list[dict[str, list[str]]] = [{"bearerAuth": []}]
