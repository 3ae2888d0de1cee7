"""A rental's launch options: entrypoint, onstart, ssh_keys, registry_auth and labels.

The request fields and their bounds (a schema RentalCreateSchema builds on), the label filter of
GET /rentals, the SSH keys a container gets (the rental's and the renter's account keys, once each)
and the sealing of registry credentials: they are kept only as a Fernet token made with
REGISTRY_AUTH_KEY, opened once to build start_instance, and dropped when the rental leaves
`pending` (app/rentals/state.py), so no copy in clear outlives the start.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from marshmallow import ValidationError, fields, validate, validates_schema

from agent.protocol import MAX_ONSTART_BYTES, registry_host
from app.auth.ssh_keys import SshPublicKey
from app.config import Settings
from app.validation import BaseSchema, BoundedDict, BoundedList, Text, check_text

MAX_RENTAL_SSH_KEYS = 16
MAX_SSH_KEYS = 32  # what start_instance carries: the rental's and the account's keys together
MAX_LABELS = 16
MAX_LABEL_VALUE = 256
LABEL_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,62})$")


def _script_bytes(value: str) -> bool:
    if len(value.encode()) > MAX_ONSTART_BYTES:
        raise ValidationError(f"At most {MAX_ONSTART_BYTES} bytes (UTF-8).")
    return True


def _label_key(value: str) -> bool:
    if not LABEL_KEY.match(value):
        raise ValidationError(
            "Label keys are 1-63 letters, digits and . _ / -, starting with a letter or digit."
        )
    return True


class RegistryAuthSchema(BaseSchema):
    username = Text(required=True, min_length=1, max_length=256)
    password = Text(required=True, min_length=1, max_length=4096, load_only=True)


class LaunchOptionsSchema(BaseSchema):
    """The optional launch fields of POST /rentals."""

    entrypoint = BoundedList(
        Text(max_length=4096), min_items=1, max_items=256, load_default=None, allow_none=True
    )
    # A script: tab and newlines are text in it; every other control character is refused.
    onstart = Text(
        max_length=MAX_ONSTART_BYTES,
        multiline=True,
        validate=_script_bytes,
        load_default=None,
        allow_none=True,
    )
    ssh_keys = BoundedList(SshPublicKey(), max_items=MAX_RENTAL_SSH_KEYS, load_default=list)
    registry_auth = fields.Nested(
        RegistryAuthSchema, load_default=None, allow_none=True, load_only=True
    )
    labels = BoundedDict(
        keys=Text(max_length=63, validate=_label_key),
        values=Text(max_length=MAX_LABEL_VALUE),
        max_items=MAX_LABELS,
        load_default=dict,
    )

    @validates_schema
    def _registry(self, data: dict[str, Any], **kwargs: object) -> None:
        image = data.get("image")
        if data.get("registry_auth") and isinstance(image, str) and not names_registry(image):
            raise ValidationError(
                "registry_auth needs an image that names its registry "
                "(e.g. registry.example.com/team/app:1.0).",
                field_name="registry_auth",
            )


def names_registry(image: str) -> bool:
    """Whether the reference starts with a registry host (docker.io/... counts; ubuntu does not)."""
    return image.partition("/")[0] == registry_host(image)


def dedupe_keys(*groups: list[str]) -> list[str]:
    """authorized_keys lines, each key once (by type and body; the first comment wins)."""
    seen: set[str] = set()
    lines: list[str] = []
    for group in groups:
        for line in group:
            identity = " ".join(line.split(" ")[:2])
            if identity not in seen:
                seen.add(identity)
                lines.append(line)
    return lines


# ---------------------------------------------------------------- labels filter (GET /rentals)
def parse_label_filter(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value); ValidationError for anything else."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValidationError("Expected key=value.")
    _label_key(key)
    check_text(value)
    if len(value) > MAX_LABEL_VALUE:
        raise ValidationError(f"Label values are at most {MAX_LABEL_VALUE} characters.")
    return key, value


class LabelFilter(fields.String):
    """A `label=key=value` query argument, loaded as (key, value)."""

    def __init__(self, **kwargs: Any) -> None:
        # key (63) + "=" + value: the bound parse_label_filter enforces, stated for the OpenAPI.
        kwargs.setdefault("validate", validate.Length(max=64 + MAX_LABEL_VALUE))
        super().__init__(**kwargs)

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: Any, data: Any, **kwargs: Any
    ) -> tuple[str, str]:
        return parse_label_filter(super()._deserialize(value, attr, data, **kwargs))


# ---------------------------------------------------------------- registry credentials at rest
class RegistryAuthUnavailable(Exception):
    """The platform has no REGISTRY_AUTH_KEY: it cannot keep registry credentials safely."""


def _fernet(settings: Settings) -> MultiFernet:
    if not settings.registry_auth_keys:
        raise RegistryAuthUnavailable
    return MultiFernet([Fernet(key.encode()) for key in settings.registry_auth_keys])


def seal(auth: dict[str, str], settings: Settings) -> str:
    """The credentials as a Fernet token (what the rental row keeps until the start)."""
    plain = json.dumps({"username": auth["username"], "password": auth["password"]})
    return _fernet(settings).encrypt(plain.encode()).decode()


def unseal(token: str, settings: Settings) -> dict[str, str] | None:
    """The credentials back, or None when no configured key opens the token."""
    try:
        opened = json.loads(_fernet(settings).decrypt(token.encode()))
    except (InvalidToken, RegistryAuthUnavailable, ValueError):
        return None
    return {"username": str(opened["username"]), "password": str(opened["password"])}
