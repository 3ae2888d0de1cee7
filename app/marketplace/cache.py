"""The offers cache: search pages in Redis, stamped with the offers version.

Any change to a node's searchable state bumps the version once its transaction commits
(:func:`invalidate_offers_after_commit`), so an entry never outlives the state it was built from;
entries also expire by TTL.
"""

from __future__ import annotations

import hashlib
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from app.db import after_commit
from app.redis_client import get_redis

log = logging.getLogger(__name__)

OFFERS_VERSION_KEY = "dc:offers:version"
CACHE_PREFIX = "dc:offers:cache:"
RAW_PREFIX = CACHE_PREFIX + "raw:"


def invalidate_offers() -> None:
    """Make every cached page stale now."""
    get_redis().incr(OFFERS_VERSION_KEY)


def _invalidate_quietly() -> None:
    try:
        invalidate_offers()
    except redis.RedisError:  # cached entries also expire by TTL
        log.exception("could not invalidate the offers cache")


def invalidate_offers_after_commit(session: Session) -> None:
    """Make cached pages stale once `session` commits (once per transaction, however many
    nodes changed); nothing happens if it rolls back."""
    after_commit(session, _invalidate_quietly, name="invalidate_offers_cache", once=True)


@dataclass
class CachedSearch:
    """A page as JSON text; `store` (when set) puts it in the cache and may run after the
    response is sent."""

    body: str
    store: Callable[[], None] | None = None


def raw_key(query_string: bytes) -> str:
    """The cache key of a request's query string exactly as it came (before validation)."""
    return RAW_PREFIX + hashlib.sha256(query_string).hexdigest()[:40]


def raw_hit(redis_client: redis.Redis, query_string: bytes) -> str | None:
    """The page stored for this exact query string, if it is current; None otherwise.

    Such an entry is stored only for a query string that passed validation and was answered,
    and the same string validates to the same arguments, so a hit needs no validation: it
    skips the argument schema and the key's normalization (most of a cached search's time).
    """
    try:
        version, cached = typing.cast(
            list[str | None], redis_client.mget(OFFERS_VERSION_KEY, raw_key(query_string))
        )
    except redis.RedisError:
        return None  # the validated path reports it
    if cached is None:
        return None
    stamp, _, body = cached.partition("|")
    return body if stamp == (version or "0") else None


def cached_page(
    key: str,
    *,
    redis_client: redis.Redis,
    ttl_seconds: int,
    search: Callable[[], str],
    also_key: str | None = None,
) -> CachedSearch:
    """The page under `key` when it is current for the offers version, else `search()`.
    `also_key` (the raw query string's key) gets the same entry."""
    try:
        # decode_responses=True: the values are text.
        version, cached = typing.cast(list[str | None], redis_client.mget(OFFERS_VERSION_KEY, key))
    except redis.RedisError:
        log.warning("offers cache unavailable; searching without it", exc_info=True)
        return CachedSearch(search())
    version = version or "0"
    hit = None
    if cached is not None:
        stamp, _, body = cached.partition("|")
        if stamp == version:
            hit = body
    if hit is not None and also_key is None:
        return CachedSearch(hit)
    # The version is read before the query runs: a change committed meanwhile bumps it, and
    # an entry stamped with the older version is never served. A hit is only stored under the
    # raw key (it is under `key` already).
    body = hit if hit is not None else search()
    keys = ([] if hit is not None else [key]) + ([also_key] if also_key is not None else [])

    def store() -> None:
        try:
            with redis_client.pipeline(transaction=False) as pipe:
                for name in keys:
                    pipe.set(name, f"{version}|{body}", ex=ttl_seconds)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not store a search in the offers cache", exc_info=True)

    return CachedSearch(body, store)
