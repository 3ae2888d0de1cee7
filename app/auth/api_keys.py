"""Users' API keys (`dck_`): issue, list, revoke, and identify the key behind a request.

Identifying a key costs one Redis GET on the hot path: the key's identity is cached under the
hash of the key. Revocation writes a tombstone under that hash *before* the revoking transaction
commits, and a cache fill only ever uses SET NX, so a request that read the row just before the
revocation cannot put a stale "valid" entry back: once DELETE /api-keys/{id} has answered, every
process refuses the key. Without Redis, keys are checked against the database (and revocation is
refused with a 503 rather than leave a cached entry alive).

`last_used_at` is written at most once per key per :data:`TOUCH_INTERVAL_SECONDS`: a Redis
SET NX with that expiry elects the one request per interval that updates the row, in its own
short transaction (GET requests never commit the request's session).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.auth.enums import ApiKeyScope
from app.auth.keys import USER_KEYS, hash_key, hash_matches
from app.auth.models import ApiKey, User
from app.db import session_scope, utcnow
from app.errors import Conflict, NotFound, ServiceUnavailable
from app.pagination import newest_first_page

log = logging.getLogger(__name__)

KEY_PREFIX = USER_KEYS.prefix
CACHE_TTL_SECONDS = 300
# Longer than any request that could have read the row before the revocation and fill the
# cache after it; later lookups read the revoked row itself.
TOMBSTONE_TTL_SECONDS = 900
TOUCH_INTERVAL_SECONDS = 60
_REVOKED = "revoked"


@dataclass(frozen=True)
class KeyIdentity:
    """Who a valid key acts as, and what it may do."""

    key_id: uuid.UUID
    user_id: uuid.UUID
    clerk_id: str
    scope: ApiKeyScope

    @property
    def read_only(self) -> bool:
        return self.scope is ApiKeyScope.READ

    def dumps(self) -> str:
        return json.dumps(
            {
                "key_id": str(self.key_id),
                "user_id": str(self.user_id),
                "clerk_id": self.clerk_id,
                "scope": self.scope.value,
            }
        )

    @classmethod
    def loads(cls, raw: str) -> KeyIdentity:
        data = json.loads(raw)
        return cls(
            key_id=uuid.UUID(data["key_id"]),
            user_id=uuid.UUID(data["user_id"]),
            clerk_id=data["clerk_id"],
            scope=ApiKeyScope(data["scope"]),
        )


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once
    record: ApiKey


def _cache_key(key_hash: str) -> str:
    return f"dc:api-key:{key_hash}"


def _touch_key(key_id: uuid.UUID) -> str:
    return f"dc:api-key-used:{key_id}"


# --- issue, list, revoke -------------------------------------------------------------------------


def create_api_key(
    session: Session, *, user: User, name: str, scope: ApiKeyScope, max_live: int
) -> NewApiKey:
    """Make a key for `user`; at most `max_live` unrevoked keys per user (409 beyond)."""
    # The user's row lock serialises concurrent creations, so the cap holds under races.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    live = session.execute(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    ).scalar_one()
    if live >= max_live:
        raise Conflict(
            f"You already have {live} API keys, the most allowed ({max_live}); "
            "revoke one you no longer use first."
        )
    issued = USER_KEYS.issue()
    record = ApiKey(
        user_id=user.id, name=name, scope=scope, prefix=issued.lookup, key_hash=issued.key_hash
    )
    session.add(record)
    session.flush()
    session.refresh(record)  # created_at from the server
    return NewApiKey(key=issued.key, record=record)


def list_api_keys(
    session: Session, *, user: User, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """The user's live keys, newest first."""
    query = select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    return newest_first_page(session, query, ApiKey, limit=limit, cursor=cursor)


def revoke_api_key(
    session: Session, *, user: User, key_id: uuid.UUID, redis_client: redis.Redis
) -> ApiKey:
    """Revoke one of the user's live keys; every process refuses it once the caller commits.

    The tombstone goes to Redis before the commit: if Redis cannot take it this raises 503 and
    nothing changes. (Should the commit then fail, the key is refused until the tombstone
    expires: revocation fails closed.)
    """
    record = session.execute(
        select(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .with_for_update()
    ).scalar_one_or_none()
    if record is None:
        raise NotFound("No such API key.")
    try:
        redis_client.set(_cache_key(record.key_hash), _REVOKED, ex=TOMBSTONE_TTL_SECONDS)
    except redis.RedisError:
        log.warning("api key revocation refused: redis unavailable", extra={"key_id": str(key_id)})
        raise ServiceUnavailable("Revocation is unavailable right now; try again.") from None
    record.revoked_at = utcnow()
    session.flush()
    return record


# --- identify the key of a request ---------------------------------------------------------------


def identify(
    key: str, *, session: Callable[[], Session], redis_client: redis.Redis | None
) -> KeyIdentity | None:
    """Who the key acts as, or None for a malformed, unknown or revoked key.

    `session` is called only when the cache cannot answer.
    """
    if not USER_KEYS.looks_like(key):
        return None
    key_hash = hash_key(key)
    cached = _cache_get(redis_client, key_hash)
    if cached == _REVOKED:
        return None
    if cached is not None:
        try:
            return KeyIdentity.loads(cached)
        except (ValueError, KeyError, TypeError):
            pass  # an entry from another version: read the row
    identity = verify_api_key(session(), key)
    if identity is not None:
        _cache_fill(redis_client, key_hash, identity)
    return identity


def verify_api_key(session: Session, key: str) -> KeyIdentity | None:
    """Check `key` against the database (constant-time hash comparison)."""
    if not USER_KEYS.looks_like(key):
        return None
    row = session.execute(
        select(
            ApiKey.id,
            ApiKey.user_id,
            ApiKey.scope,
            ApiKey.key_hash,
            ApiKey.revoked_at,
            User.clerk_id,
        )
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.prefix == USER_KEYS.lookup(key))
    ).first()
    if not hash_matches(row.key_hash if row is not None else None, key):
        return None
    assert row is not None
    if row.revoked_at is not None:
        return None
    return KeyIdentity(key_id=row.id, user_id=row.user_id, clerk_id=row.clerk_id, scope=row.scope)


def record_use(identity: KeyIdentity, *, redis_client: redis.Redis | None) -> bool:
    """Set the key's last_used_at if this is its first use in the interval; True if written."""
    if redis_client is None:
        return False
    try:
        first = redis_client.set(_touch_key(identity.key_id), 1, nx=True, ex=TOUCH_INTERVAL_SECONDS)
    except redis.RedisError:
        return False  # no gate, no write: never a write per request
    if not first:
        return False
    try:
        with session_scope() as session:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == identity.key_id, ApiKey.revoked_at.is_(None))
                .values(last_used_at=func.now())
            )
    except Exception:  # bookkeeping must never fail the request it rides on
        log.warning("could not record api key use", extra={"key_id": str(identity.key_id)})
        return False
    return True


def _cache_get(client: redis.Redis | None, key_hash: str) -> Any:
    if client is None:
        return None
    try:
        return client.get(_cache_key(key_hash))
    except redis.RedisError:
        return None


def _cache_fill(client: redis.Redis | None, key_hash: str, identity: KeyIdentity) -> None:
    if client is None:
        return
    # NX: never overwrite a revocation's tombstone written since the row was read.
    with contextlib.suppress(redis.RedisError):
        client.set(_cache_key(key_hash), identity.dumps(), nx=True, ex=CACHE_TTL_SECONDS)
