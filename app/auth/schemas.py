from marshmallow import Schema, fields

from app.enums import Role
from app.money import Money


class MeSchema(Schema):
    id = fields.UUID()
    clerk_id = fields.String()
    email = fields.String(allow_none=True)
    role = fields.Enum(Role, by_value=True)
    balance = Money()
    is_admin = fields.Boolean()
    created_at = fields.DateTime(format="iso")


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())
    failing = fields.List(fields.String())
