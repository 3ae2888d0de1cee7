from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.enums import TransactionType
from app.money import POSITIVE_PATTERN, Money
from app.validation import BaseSchema, Text

POSITIVE = {"pattern": POSITIVE_PATTERN}

_PRINTABLE = validate.Regexp(
    r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
    error="Printable ASCII without leading or trailing spaces.",
)


class CreditCreateSchema(BaseSchema):
    user_id = fields.UUID(required=True)
    amount = Money(required=True, metadata=POSITIVE)
    reference = Text(
        required=True,
        min_length=1,
        max_length=255,
        validate=_PRINTABLE,
        metadata={"description": "The payment's id; a top-up is credited once per reference."},
    )
    description = Text(max_length=500, load_default=None, allow_none=True)


class TransactionSchema(Schema):
    id = fields.UUID()
    amount = Money()
    type = fields.Enum(TransactionType, by_value=True)
    kind = fields.String(metadata={"description": "topup, usage, earning, fee or adjustment"})
    reference_id = fields.String(allow_none=True)
    rental_id = fields.UUID(allow_none=True)
    description = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")


class TransactionListSchema(Schema):
    items = fields.List(fields.Nested(TransactionSchema))
    next_cursor = fields.String(allow_none=True)


class BalanceSchema(Schema):
    balance = Money()


class InvariantReportSchema(Schema):
    ok = fields.Boolean()
    checked_at = fields.DateTime(format="iso")
    totals = fields.Dict(keys=fields.String(), values=fields.Raw())
    differences = fields.List(fields.Dict(keys=fields.String(), values=fields.Raw()))
