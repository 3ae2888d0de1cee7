"""One rule for everything a client sends: bounded, and text free of control characters.

Every request schema derives from :class:`BaseSchema` and declares its fields with the bounded
fields below, so a value that PostgreSQL would refuse (a NUL in a text or JSONB column, a string
longer than its column, a decimal beyond what ``numeric`` holds) is a 422 naming the field before
any row is touched. Nothing is stripped or repaired: a bad value is refused.

- Text (:class:`Text`): a maximum length always; no control characters (C0, DEL, C1) and no lone
  surrogates. Only fields that hold multi-line text by nature (a shell script) are declared
  ``multiline=True`` and may also hold tab, line feed and carriage return.
- Numbers: every integer and float has a range; decimals (:class:`PlainDecimal`) are plain
  digits, at most 15 before the point and 12 after it, so any value fits ``numeric``.
- Lists (:class:`BoundedList`) and maps (:class:`BoundedDict`) have a maximum size; lists whose
  duplicates make no sense are declared ``unique=True``.
- Whatever a schema receives outside those fields (a raw dict, a plain ``String``) is still
  checked for control characters by :class:`BaseSchema`'s pre-load hook, at any depth.

The OpenAPI document carries the bounds (``maxLength``, ``maximum``, ``maxItems``,
``maxProperties``, ``uniqueItems``, ``pattern``); a test checks that every request field has them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load
from marshmallow.validate import Length, Range, Regexp

# C0 controls, DEL, C1 controls and UTF-16 surrogates (a lone one cannot be encoded as UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, but tab, line feed and carriage return are allowed.
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The same rules as JSON Schema patterns (the OpenAPI document; schemathesis generates from them).
SINGLE_LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
MULTILINE_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"

CONTROL_MESSAGE = "Must not contain control characters."
MULTILINE_CONTROL_MESSAGE = "Must not contain control characters other than tab and newlines."

# Plain decimal text: what every decimal filter and the query language accept.
DECIMAL_INTEGER_DIGITS = 15
DECIMAL_PLACES = 12
PLAIN_DECIMAL = re.compile(
    rf"[+-]?(\d{{1,{DECIMAL_INTEGER_DIGITS}}}(\.\d{{0,{DECIMAL_PLACES}}})?|\.\d{{1,{DECIMAL_PLACES}}})",
    re.ASCII,
)


def has_control_characters(value: str, *, multiline: bool = False) -> bool:
    """Whether `value` breaks the text rule (see the module docstring)."""
    pattern = _CONTROL_MULTILINE if multiline else _CONTROL
    return pattern.search(value) is not None


def check_text(value: str, *, multiline: bool = False) -> None:
    """Raise ValidationError when `value` breaks the text rule."""
    if has_control_characters(value, multiline=multiline):
        raise ValidationError(MULTILINE_CONTROL_MESSAGE if multiline else CONTROL_MESSAGE)


class Text(fields.String):
    """A string with a maximum length and no control characters (tab and newlines too, unless
    ``multiline``)."""

    def __init__(
        self,
        *,
        max_length: int,
        min_length: int | None = None,
        multiline: bool = False,
        validate: Any = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        validators: list[Any] = [Length(min=min_length, max=max_length)]
        if validate is not None:
            validators.extend(validate if isinstance(validate, list) else [validate])
        meta = dict(metadata or {})
        # apispec documents only the first Regexp validator; with none, the text rule is the pattern.
        if not any(isinstance(v, Regexp) for v in validators):
            meta.setdefault("pattern", MULTILINE_PATTERN if multiline else SINGLE_LINE_PATTERN)
        super().__init__(validate=validators, metadata=meta, **kwargs)
        self.multiline = multiline
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        check_text(text, multiline=self.multiline)
        return text


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 time with its offset, loaded as UTC, between 1970 and 9998.

    Python takes offsets up to 24 h and years from 1; PostgreSQL refuses offsets past 15:59 and a
    year-1 time moved to UTC overflows: both were 500s before this field.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("format", "iso")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        try:
            utc = loaded.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Must be a time between 1970 and 9998.") from None
        if not 1970 <= utc.year <= 9998:
            raise ValidationError("Must be a time between 1970 and 9998.")
        return utc


class PlainDecimal(fields.Decimal):
    """A decimal written as plain digits (no exponent, NaN or infinity), within a range."""

    default_error_messages = {
        "invalid": f"Expected a number such as 1.5 (at most {DECIMAL_INTEGER_DIGITS} digits "
        f"before the point and {DECIMAL_PLACES} after it).",
    }

    def __init__(self, low: int | str, high: int | str, **kwargs: Any):
        super().__init__(
            allow_nan=False,
            validate=Range(min=Decimal(low), max=Decimal(high)),
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.make_error("invalid")
        text = (value if isinstance(value, str) else repr(value)).strip()
        if not PLAIN_DECIMAL.fullmatch(text):
            raise self.make_error("invalid")
        try:
            return Decimal(text)
        except InvalidOperation:
            raise self.make_error("invalid") from None


class BoundedList(fields.List):
    """A list with a maximum length; ``unique`` lists refuse a repeated item."""

    def __init__(
        self,
        item: fields.Field,
        *,
        max_items: int,
        min_items: int | None = None,
        unique: bool = False,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        validators: list[Any] = [Length(min=min_items, max=max_items)]
        meta = dict(metadata or {})
        if unique:
            validators.append(_unique)
            meta["uniqueItems"] = True
        super().__init__(item, validate=validators, metadata=meta, **kwargs)


def _unique(values: list[Any]) -> None:
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ValidationError(f"Each item may be listed once; {value!r} is repeated.")
        seen.append(value)


class BoundedDict(fields.Dict):
    """A map with bounded keys and values and at most `max_items` entries."""

    def __init__(
        self,
        *,
        keys: fields.Field,
        values: fields.Field,
        max_items: int,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        meta = {**(metadata or {}), "maxProperties": max_items}
        super().__init__(keys=keys, values=values, metadata=meta, **kwargs)
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[Any, Any]:
        if isinstance(value, Mapping) and len(value) > self.max_items:
            raise ValidationError(f"At most {self.max_items} entries.")
        return super()._deserialize(value, attr, data, **kwargs)


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if depth > 32:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _strings(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


class BaseSchema(Schema):
    """The base of every request schema: control characters are refused wherever they are.

    :class:`Text` fields apply the rule themselves (they know whether they are multi-line) and
    nested BaseSchemas check their own input; every other declared field's raw value is walked
    here, so a plain ``String``, a ``Dict`` or a ``Raw`` field cannot carry a NUL into a column.
    """

    @pre_load
    def _refuse_control_characters(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        by_key = {field.data_key or name: field for name, field in self.load_fields.items()}
        errors: dict[str, list[str]] = {}
        for key in data:
            field = by_key.get(key)
            if field is not None and _checks_itself(field):
                continue
            value = data[key]
            if isinstance(key, str) and has_control_characters(key):
                errors[_shown(key)] = [CONTROL_MESSAGE]
            elif any(has_control_characters(text) for text in _strings(value)):
                errors[key] = [CONTROL_MESSAGE]
        if errors:
            raise ValidationError(errors)
        return data


def _checks_itself(field: fields.Field) -> bool:
    """Whether every string `field` takes is checked by a Text field or a nested BaseSchema.

    A field of a domain that parses its text strictly itself (an SSH key) says so with a class
    attribute ``checks_own_text = True``.
    """
    if isinstance(field, Text) or getattr(field, "checks_own_text", False):
        return True
    if isinstance(field, fields.Nested):
        return isinstance(field.schema, BaseSchema)
    if isinstance(field, fields.List):
        return _checks_itself(field.inner)
    if isinstance(field, fields.Dict):
        return all(
            part is not None and _checks_itself(part)
            for part in (field.key_field, field.value_field)
        )
    return isinstance(field, (fields.Number, fields.Boolean, fields.UUID, fields.Enum))


def _shown(key: str) -> str:
    return _CONTROL.sub("?", key)[:100]
