"""Who is calling: the verified user of this request, and the decorators that require one."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from flask import current_app, g, request

from app.auth import api_keys
from app.auth.account import Account, account_by_clerk_id, account_by_id
from app.auth.api_keys import KeyIdentity
from app.auth.models import User
from app.auth.service import get_or_create_user
from app.auth.tokens import Claims, TokenVerifier
from app.errors import Forbidden, Unauthorized
from app.redis_client import get_redis
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


# A read-only API key may use these methods and no other.
READ_METHODS = frozenset({"GET", "HEAD"})


def verified_claims(token: str | None) -> Claims:
    """Verify the bearer and make sure its user row exists (created on the first valid token).

    The bearer is routed by its prefix: `dck_` is a user API key, anything else a session JWT.
    Every user route authenticates through here, so this is also where a read-only key is held
    to GET and HEAD.
    """
    if token is None:
        raise Unauthorized(
            "Authentication required: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token.startswith(api_keys.KEY_PREFIX):
        return _api_key_claims(token)
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


def _api_key_claims(token: str) -> Claims:
    # Routes call require_login() and then current_user(): identify the key once per request.
    memo = g.get("dc_api_key_claims")
    if memo is not None and memo[0] == token:
        return memo[1]
    identity = api_keys.identify(token, session=db_session, redis_client=_redis())
    if identity is None:
        raise Unauthorized(
            "The API key is not valid: it is unknown or has been revoked.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    g.dc_api_key = identity
    api_keys.record_use(identity, redis_client=_redis())
    if identity.read_only and request.method not in READ_METHODS:
        raise Forbidden("This API key is read-only: it may only read (GET), not change anything.")
    claims = Claims(
        user_id=identity.clerk_id,
        email=None,
        session_id=None,
        raw={"api_key_id": str(identity.key_id)},
    )
    g.dc_api_key_claims = (token, claims)
    return claims


def _redis() -> redis.Redis | None:
    try:
        return get_redis(current_app.config["DC_SETTINGS"].redis_url)
    except redis.RedisError:
        return None


def request_api_key() -> KeyIdentity | None:
    """The API key this request authenticated with (None for a session token)."""
    return g.get("dc_api_key")


def authenticate(token: str | None) -> User:
    # A route behind login_required has verified this bearer already: not twice per request.
    memo = g.get("dc_claims")
    claims = memo if memo is not None and token == g.get("dc_claims_token") else None
    if claims is None:
        claims = verified_claims(token)
    user = g.get("dc_user")
    if user is None or user.clerk_id != claims.user_id:
        key = request_api_key()
        if key is not None and key.clerk_id == claims.user_id:
            user = _load_key_user(key)
        else:
            user = _load_user(claims)
    return user


def _load_key_user(key: KeyIdentity) -> User:
    """The user a key acts as (a key never creates a user: it was made by an existing one)."""
    user = db_session().get(User, key.user_id)
    if user is None:
        raise Unauthorized("The API key is not valid: its user no longer exists.")
    return user


def current_user() -> User:
    user = g.get("dc_user")
    if user is None:
        user = authenticate(bearer_token())
        g.dc_user = user
    return user


def current_account() -> Account:
    """The calling user for a route that only shows it: its row read by one SELECT.

    The row is read on every request (never cached across requests). A user's first request,
    or one whose token brings a new email, takes the path of :func:`current_user`, which creates
    or updates the row.
    """
    account = g.get("dc_account")
    if account is not None:
        return account
    user = g.get("dc_user")
    if user is not None:  # loaded by this request already (its first token)
        account = Account.of(user)
    else:
        claims = require_login()
        key = request_api_key()
        if key is not None and key.clerk_id == claims.user_id:
            found = account_by_id(key.user_id)
            if found is None:
                raise Unauthorized("The API key is not valid: its user no longer exists.")
            account = found
        else:
            found = account_by_clerk_id(claims.user_id)
            if found is None or (claims.email is not None and found.email != claims.email):
                found = Account.of(current_user())
            account = found
    g.dc_account = account
    return account


def require_login() -> Claims:
    """Authenticate the request without loading the user row when it is known to exist."""
    claims = g.get("dc_claims")
    if claims is None:
        token = bearer_token()
        claims = verified_claims(token)
        g.dc_claims = claims
        g.dc_claims_token = token
    return claims


def is_admin(user: User | Account) -> bool:
    return user.clerk_id in current_app.config["DC_SETTINGS"].admin_user_ids


def login_required(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_login()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def session_or_full_key_required(fn: F) -> F:
    """For managing credentials: a session token or a `full` API key; a `read` key gets 403."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_login()
        key = request_api_key()
        if key is not None and key.read_only:
            raise Forbidden("Managing API keys needs a session or a full-scope API key.")
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


# OpenAPI security requirement for routes that take a Clerk session token or a user API key.
BEARER_AUTH: list[dict[str, list[str]]] = [{"bearerAuth": []}]
