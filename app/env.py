"""Reading environment variables: the .env file, a reader that collects every problem at once,
and the parsers that turn a value into a setting (each raises ValueError for a bad value)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


class Reader:
    """Collects every problem so the error names all bad variables at once."""

    def __init__(self, environ: Mapping[str, str], dev: bool):
        self.environ = environ
        self.dev = dev
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(
        self,
        name: str,
        default: str | None = None,
        *,
        secret: bool = False,
        dev_default: str | None = None,
        optional: bool = False,
    ) -> Any:
        value = self.raw(name)
        if value is not None:
            return value
        if default is not None:
            return default
        if dev_default is not None and self.dev:
            return dev_default
        if optional:
            return None
        what = "a secret value" if secret else "a value"
        self.problems.append(f"{name} is required ({what}; see .env.example)")
        return ""

    def parse(
        self,
        name: str,
        default: str,
        parser: Callable[[str], Any],
        expected: str,
        *,
        secret: bool = False,
    ) -> Any:
        value = self.raw(name) or default
        try:
            return parser(value)
        except (ValueError, InvalidOperation, TypeError, binascii.Error):
            shown = name if secret else f"{name}={value!r}"  # a secret is never echoed
            self.problems.append(f"{shown} is invalid: expected {expected}")
            return None

    def url(
        self,
        name: str,
        schemes: tuple[str, ...],
        default: str | None = None,
        dev_default: str | None = None,
    ) -> str:
        value: str = self.text(name, default, dev_default=dev_default)
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
                self.problems.append(
                    f"{name}={value!r} is invalid: expected a URL starting with "
                    + " or ".join(f"{s}://" for s in schemes)
                )
        return value


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


def port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError(value)
    return number


def port_range(value: str) -> tuple[int, int]:
    start_s, _, end_s = value.partition("-")
    start, end = port(start_s), port(end_s)
    if start > end:
        raise ValueError(value)
    return start, end


def percent(value: str) -> Decimal:
    number = Decimal(value)
    if not number.is_finite() or not Decimal(0) <= number < Decimal(100):
        raise ValueError(value)
    return number


def non_negative_money(value: str) -> Decimal:
    number = Decimal(value)
    if not number.is_finite() or number < 0 or number >= Decimal("1e12"):
        raise ValueError(value)
    return number.quantize(Decimal("0.0001"))


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def positive_seconds(value: str) -> float:
    number = float(value)
    if not 0.05 <= number <= 60:
        raise ValueError(value)
    return number


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def fernet_keys(value: str) -> tuple[str, ...] | None:
    """Comma-separated Fernet keys (urlsafe base64 of 32 bytes); empty: None."""
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for key in keys:
        if len(base64.urlsafe_b64decode(key.encode())) != 32:
            raise ValueError(key)
    return keys or None


def log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(value)
    return level


def duration_literal(value: str) -> str:
    value = value.strip()
    if value.upper() == "INF":
        return "INF"
    if len(value) < 2 or not value[:-1].isdigit() or value[-1] not in "hdw":
        raise ValueError(value)
    return value
