"""Money: Decimal end to end, 4 places, rounded in one place with one rule (half up)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from marshmallow import ValidationError, fields

PLACES = Decimal("0.0001")
_PLAIN_DECIMAL = re.compile(r"^-?[0-9]{1,12}(\.[0-9]+)?$")
MAX_AMOUNT = Decimal("1000000000")
# What Money reads and writes: up to 10 digits before the point, at most 4 after it.
WIRE_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,4})?$"
# What a request may send where the amount must be positive (documentation for clients and fuzzers).
POSITIVE_PATTERN = r"^([1-9][0-9]{0,8}(\.[0-9]{1,4})?|0\.[0-9]{0,3}[1-9])$"


def quantize(value: Decimal) -> Decimal:
    """The platform's only rounding rule: 4 decimal places, half away from zero."""
    return value.quantize(PLACES, rounding=ROUND_HALF_UP)


def to_wire(value: Decimal) -> str:
    return str(quantize(Decimal(value)))


class Money(fields.Field):
    """A decimal string with at most 4 places on the wire; floats are refused (they are inexact)."""

    default_error_messages = {
        "invalid": 'Must be a decimal string such as "12.5000".',
        "float": "Send money as a string, not a JSON number, to keep it exact.",
        "places": "At most 4 decimal places.",
    }

    def __init__(self, *, positive: bool = True, allow_zero: bool = False, **kwargs: Any):
        # The OpenAPI document shows the wire form (and fuzzers generate it).
        metadata = {
            "type": "string",
            "pattern": WIRE_PATTERN,
            "maxLength": 15,
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)
        self.positive = positive
        self.allow_zero = allow_zero

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return to_wire(Decimal(value))

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, float):
            raise self.make_error("float")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.make_error("invalid")
        text = str(value).strip()
        if not _PLAIN_DECIMAL.match(text):
            raise self.make_error("invalid")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise self.make_error("invalid") from None
        if not number.is_finite():
            raise self.make_error("invalid")
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -4:
            raise self.make_error("places")
        low = Decimal(0)
        too_low = number < low or (number == low and not self.allow_zero)
        if (self.positive and too_low) or number > MAX_AMOUNT:
            bound = "or equal to 0" if self.allow_zero else "0"
            raise ValidationError(f"Must be greater than {bound} and at most {MAX_AMOUNT}.")
        return quantize(number)
