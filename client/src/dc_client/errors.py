"""The one exception the client raises for anything the API (or the way to it) refuses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer of the API, in its JSON error shape, or a failure to reach it.

    `status` is the HTTP status (0 when no answer came: connection refused, timeout), `code` the
    body's `code` (the HTTP status for flask-smorest errors; a word such as ``"timeout"`` when no
    answer came), `message` the human text and `errors` the per-field validation messages.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | str | None = None,
        errors: dict[str, Any] | None = None,
        status_text: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code: int | str = code if code is not None else status
        self.message = message
        self.errors: dict[str, Any] = errors or {}
        self.status_text = status_text
        self.body = body

    def __str__(self) -> str:
        where = f"{self.status} {self.status_text}".strip() if self.status else str(self.code)
        text = f"{self.message} ({where})"
        if self.errors:
            text += f": {_flatten(self.errors)}"
        return text

    def __repr__(self) -> str:
        return f"ApiError(status={self.status!r}, code={self.code!r}, message={self.message!r})"


def _flatten(errors: Any) -> str:
    """`{"json": {"image": ["Missing data."]}}` -> `image: Missing data.`"""
    return "; ".join(f"{path}: {text}" if path else text for path, text in _leaves(errors, ""))


# flask-smorest nests validation messages by request location; the location is noise for a person.
_LOCATIONS = frozenset({"json", "query", "headers", "form", "path"})


def _leaves(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        found: list[tuple[str, str]] = []
        for key, sub in value.items():
            name = path if key in _LOCATIONS else (f"{path}.{key}" if path else str(key))
            found.extend(_leaves(sub, name))
        return found
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item, path)]
    return [(path, str(value))]
