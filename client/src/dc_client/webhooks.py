"""Checking the `DC-Signature` header of a webhook delivery (CONTRACT.md, "Webhooks")."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "DC-Signature"


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> str:
    """The header value the platform sends for `body` at `timestamp` (for tests and tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` (`t=<unix>,v1=<hex>`) signs the raw `body` with `secret` and its
    timestamp is within `tolerance` seconds of now; False otherwise.

    Pass the body exactly as received (before any JSON parsing). Several `v1=` values (a secret
    being rotated) are accepted when any one matches. The timestamp check stops a captured
    delivery from being replayed later; de-duplicate by the event's `id` as well.
    """
    if not secret or not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
