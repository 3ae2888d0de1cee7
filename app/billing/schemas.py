from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.billing.earnings import Every
from app.billing.models import PayoutStatus
from app.enums import TransactionType
from app.money import POSITIVE_PATTERN, Money
from app.pagination import PageArgsSchema
from app.validation import BaseSchema, Text, UtcDateTime

POSITIVE = {"pattern": POSITIVE_PATTERN}
MAX_EARNING_PERIODS = 366

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
    kind = fields.String(
        metadata={
            "description": "topup, usage, earning, fee, adjustment, payout, payout_return or "
            "payout_paid"
        }
    )
    reference_id = fields.String(allow_none=True)
    rental_id = fields.UUID(allow_none=True)
    payout_id = fields.UUID(allow_none=True)
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


class EarningsQueryArgsSchema(BaseSchema):
    every = fields.Enum(Every, by_value=True, load_default=Every.DAY)
    since = UtcDateTime(
        load_default=None,
        metadata={"description": "Only ledger lines posted at or after this time."},
    )
    limit = fields.Integer(
        load_default=30,
        validate=validate.Range(min=1, max=MAX_EARNING_PERIODS),
        metadata={"description": "How many periods (each with a row per node) to return."},
    )
    cursor = Text(max_length=512, load_default=None)


class EarningSchema(Schema):
    period = fields.Date(metadata={"description": "The period's first day (UTC)."})
    node_id = fields.UUID()
    gross = Money()
    fee = Money()
    net = Money()


class EarningListSchema(Schema):
    items = fields.List(fields.Nested(EarningSchema))
    next_cursor = fields.String(allow_none=True)


class PayoutCreateSchema(BaseSchema):
    amount = Money(required=True, metadata=POSITIVE)


class PayoutRejectSchema(BaseSchema):
    reason = Text(required=True, min_length=1, max_length=500)


class PayoutQueryArgsSchema(PageArgsSchema):
    status = fields.Enum(PayoutStatus, by_value=True, load_default=None)


class PayoutSchema(Schema):
    id = fields.UUID()
    amount = Money()
    status = fields.String(metadata={"description": "requested, approved or rejected"})
    reason = fields.String(allow_none=True)
    decided_at = fields.DateTime(format="iso", allow_none=True)
    created_at = fields.DateTime(format="iso")


class PayoutListSchema(Schema):
    items = fields.List(fields.Nested(PayoutSchema))
    next_cursor = fields.String(allow_none=True)
