"""SSH public keys: validation shared with the rentals domain, and the account's keys.

Only what OpenSSH writes to a `.pub` file is accepted: `<type> <base64 blob> [comment]` with type
ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (at least 2048 bits). The blob is parsed (not
pattern-matched), and the stored line is re-encoded from the parsed key, so what reaches a
container's authorized_keys is always one well-formed line with no options (`command=...`,
`from=...`) and no control characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from marshmallow import ValidationError, fields, validate
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.auth.models import SshKey, User
from app.errors import Conflict, NotFound
from app.pagination import newest_first_page

MAX_LINE_LENGTH = 8192  # a 16384-bit RSA key is about 2,800 characters
MAX_COMMENT_LENGTH = 256
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
_ECDSA_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ecdsa-sha2-nistp256": ec.SECP256R1,
    "ecdsa-sha2-nistp384": ec.SECP384R1,
    "ecdsa-sha2-nistp521": ec.SECP521R1,
}
KEY_TYPES = ("ssh-ed25519", *_ECDSA_CURVES, "ssh-rsa")


class InvalidSshKey(ValueError):
    """The text is not an acceptable OpenSSH public key; the message says why."""


@dataclass(frozen=True)
class ParsedSshKey:
    line: str  # "<type> <base64>[ <comment>]", re-encoded from the parsed key
    key_type: str
    fingerprint: str  # "SHA256:<base64 without padding>", as `ssh-keygen -l` prints it
    comment: str | None


def parse_ssh_public_key(text: Any) -> ParsedSshKey:
    """Parse one OpenSSH public key line; raise :class:`InvalidSshKey` for anything else."""
    if not isinstance(text, str):
        raise InvalidSshKey("Expected an OpenSSH public key as a string.")
    # A key pasted from a .pub file ends with a newline; that one is not part of the key.
    line = text.removesuffix("\n").removesuffix("\r")
    if len(line) > MAX_LINE_LENGTH:
        raise InvalidSshKey(f"The key is longer than {MAX_LINE_LENGTH} characters.")
    if not line.isprintable():
        raise InvalidSshKey(
            "The key contains control characters; send one line, as in a .pub file."
        )
    parts = [part for part in line.split(" ") if part]
    if not parts:
        raise InvalidSshKey("The key is empty.")
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        if any(t in parts for t in KEY_TYPES) or "=" in key_type or "," in key_type:
            raise InvalidSshKey(
                'Options before the key (such as command="..." or from="...") are not allowed.'
            )
        raise InvalidSshKey(
            f"Unsupported key type {key_type[:40]!r}: use one of {', '.join(KEY_TYPES)}."
        )
    if len(parts) < 2 or not parts[1]:
        raise InvalidSshKey("The key has no base64 body after its type.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSshKey("The key's body is not valid base64.") from None
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {parts[1]}".encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidSshKey(f"The key's body is not a valid {key_type} key.") from None
    _check_strength(key_type, key)
    canonical = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    canonical_type, canonical_b64 = canonical.decode().split(" ", 1)
    if canonical_type != key_type or base64.b64decode(canonical_b64) != blob:
        raise InvalidSshKey(f"The key's body is not a valid {key_type} key.")
    comment = " ".join(parts[2:]) or None
    if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidSshKey(f"The key's comment is longer than {MAX_COMMENT_LENGTH} characters.")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    normalized = f"{key_type} {canonical_b64}" + (f" {comment}" if comment else "")
    return ParsedSshKey(
        line=normalized, key_type=key_type, fingerprint=f"SHA256:{digest}", comment=comment
    )


def _check_strength(key_type: str, key: Any) -> None:
    if key_type == "ssh-ed25519":
        ok = isinstance(key, ed25519.Ed25519PublicKey)
    elif key_type == "ssh-rsa":
        ok = isinstance(key, rsa.RSAPublicKey)
        if ok and key.key_size < MIN_RSA_BITS:
            raise InvalidSshKey(
                f"RSA keys must have at least {MIN_RSA_BITS} bits (this one has {key.key_size}); "
                "an ed25519 key is better."
            )
        if ok and key.key_size > MAX_RSA_BITS:
            raise InvalidSshKey(f"RSA keys may have at most {MAX_RSA_BITS} bits.")
    else:
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            key.curve, _ECDSA_CURVES[key_type]
        )
    if not ok:
        raise InvalidSshKey(f"The key's body is not a valid {key_type} key.")


def validate_ssh_public_key(text: Any) -> str:
    """The normalized one-line form of an OpenSSH public key; :class:`InvalidSshKey` otherwise.

    For the rentals domain's per-rental `ssh_keys` (or use the :class:`SshPublicKey` field).
    """
    return parse_ssh_public_key(text).line


class SshPublicKey(fields.String):
    """A marshmallow field that loads an OpenSSH public key as its normalized line (422 if bad)."""

    # validate_ssh_public_key refuses control characters itself (one trailing newline, as in a
    # .pub file, is allowed): the request schema's blanket rule leaves this field to it.
    checks_own_text = True

    def __init__(self, **kwargs: Any) -> None:
        # The bound is checked by validate_ssh_public_key; saying it here puts it in the OpenAPI.
        kwargs.setdefault("validate", validate.Length(max=MAX_LINE_LENGTH))
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            return validate_ssh_public_key(value)
        except InvalidSshKey as exc:
            raise ValidationError(str(exc)) from None


# --- the account's keys ---------------------------------------------------------------------------


def add_ssh_key(
    session: Session, *, user: User, public_key: str, name: str | None, max_keys: int
) -> SshKey:
    """Add a key to the account; the same key twice is a 409 that names the existing one."""
    parsed = parse_ssh_public_key(public_key)
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    existing = session.execute(
        select(SshKey.id).where(SshKey.user_id == user.id, SshKey.fingerprint == parsed.fingerprint)
    ).scalar_one_or_none()
    if existing is not None:
        raise _duplicate(existing)
    count = session.execute(
        select(func.count()).select_from(SshKey).where(SshKey.user_id == user.id)
    ).scalar_one()
    if count >= max_keys:
        raise Conflict(
            f"Your account already has {count} SSH keys, the most allowed ({max_keys}); "
            "remove one first."
        )
    record = SshKey(
        user_id=user.id,
        name=name or parsed.comment or parsed.key_type,
        public_key=parsed.line,
        fingerprint=parsed.fingerprint,
    )
    session.add(record)
    session.flush()
    session.refresh(record)  # created_at from the server
    return record


def _duplicate(existing: uuid.UUID) -> Conflict:
    return Conflict(
        f"This SSH key is already on your account (id {existing}).",
        errors={"public_key": [f"Already added as {existing}."]},
    )


def list_ssh_keys(
    session: Session, *, user: User, limit: int, cursor: str | None
) -> tuple[list[SshKey], str | None]:
    query = select(SshKey).where(SshKey.user_id == user.id)
    return newest_first_page(session, query, SshKey, limit=limit, cursor=cursor)


def delete_ssh_key(session: Session, *, user: User, key_id: uuid.UUID) -> None:
    deleted = session.execute(
        delete(SshKey).where(SshKey.id == key_id, SshKey.user_id == user.id).returning(SshKey.id)
    ).first()
    if deleted is None:
        raise NotFound("No such SSH key.")


def account_ssh_keys(session: Session, user_id: uuid.UUID) -> list[str]:
    """The account's public keys as authorized_keys lines, oldest first (for a rental's start)."""
    return list(
        session.execute(
            select(SshKey.public_key)
            .where(SshKey.user_id == user_id)
            .order_by(SshKey.created_at, SshKey.id)
        ).scalars()
    )
