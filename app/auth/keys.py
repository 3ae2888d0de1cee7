"""Random bearer keys shown once and kept only as a hash: node keys (`dcn_`) and user keys (`dck_`).

A key carries 256 bits of randomness, so a fast hash is enough (no password stretching: nobody
can guess a preimage, and the lookup must stay cheap on every request). A short public prefix of
the key finds its row; the SHA-256 of the whole key proves it, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

LOOKUP_LEN = 12  # characters after the kind's prefix that find the row (72 bits, not secret)
MAX_KEY_LEN = 128


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the plain key: returned to its owner once, never stored
    lookup: str
    key_hash: str


@dataclass(frozen=True)
class KeyKind:
    prefix: str  # "dcn_", "dck_"

    def issue(self) -> IssuedKey:
        key = self.prefix + secrets.token_urlsafe(32)
        return IssuedKey(key=key, lookup=self.lookup(key), key_hash=hash_key(key))

    def lookup(self, key: str) -> str:
        return key[: len(self.prefix) + LOOKUP_LEN]

    def looks_like(self, key: str | None) -> bool:
        """Whether `key` could be one of this kind (cheap checks before any lookup)."""
        return (
            key is not None
            and key.startswith(self.prefix)
            and len(self.prefix) + LOOKUP_LEN < len(key) <= MAX_KEY_LEN
        )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hash_matches(stored_hash: str | None, key: str) -> bool:
    """Constant-time check of `key` against a stored hash; the same work when there is none."""
    candidate = hash_key(key)
    if stored_hash is None:
        hmac.compare_digest(candidate, candidate)
        return False
    return hmac.compare_digest(stored_hash, candidate)


NODE_KEYS = KeyKind("dcn_")
USER_KEYS = KeyKind("dck_")
