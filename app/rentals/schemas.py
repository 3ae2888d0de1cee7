from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate, validates

from agent.protocol import valid_image
from app.enums import RentalStatus
from app.money import Money

MAX_PORTS = 20
MAX_ENV = 100
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")


class RentalCreateSchema(Schema):
    node_id = fields.UUID(required=True)
    image = fields.String(required=True, validate=validate.Length(min=1, max=255))
    command = fields.List(
        fields.String(validate=validate.Length(max=4096)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=256),
    )
    env = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(
                _ENV_NAME,
                error="Environment variable names are letters, digits and _, "
                "not starting with a digit.",
            )
        ),
        values=fields.String(validate=validate.Length(max=32768)),
        load_default=dict,
    )
    ports = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=65535)),
        load_default=list,
        validate=validate.Length(max=MAX_PORTS),
    )
    max_hourly_rate = Money(load_default=None, allow_none=True)
    accept_maintenance = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Rent a node that has maintenance announced: the rental ends when "
            "the window starts. Without it such a request is a 409."
        },
    )

    @validates("image")
    def _image(self, value: str, **kwargs: object) -> None:
        if not valid_image(value):
            raise ValidationError(
                "Not a valid image reference (e.g. ubuntu:22.04 or "
                "registry.example.com/team/app@sha256:...)."
            )

    @validates("env")
    def _env(self, value: dict[str, str], **kwargs: object) -> None:
        if len(value) > MAX_ENV:
            raise ValidationError(f"At most {MAX_ENV} environment variables.")

    @validates("ports")
    def _ports(self, value: list[int], **kwargs: object) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("Each container port may be listed once.")


class RentalQueryArgsSchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))
    status = fields.Enum(RentalStatus, by_value=True, load_default=None)


class RentalMaintenanceSchema(Schema):
    starts_at = fields.DateTime()
    ends_at = fields.DateTime()
    reason = fields.String()


class RentalSchema(Schema):
    id = fields.UUID()
    node_id = fields.UUID()
    renter_id = fields.UUID()
    status = fields.Enum(RentalStatus, by_value=True)
    image = fields.String()
    command = fields.List(fields.String(), allow_none=True)
    env = fields.Dict(keys=fields.String(), values=fields.String())
    ports = fields.List(fields.Integer())
    cost_per_hour = Money()
    cost_so_far = Money(allow_none=True)
    credit_minutes_left = fields.Integer(allow_none=True)
    connection_info = fields.Dict(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    exit_code = fields.Integer(allow_none=True)
    start_time = fields.DateTime(allow_none=True)
    end_time = fields.DateTime(allow_none=True)
    stop_requested_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    maintenance = fields.Nested(
        RentalMaintenanceSchema,
        allow_none=True,
        metadata={
            "description": "Maintenance announced on the node of a live rental: the rental "
            "ends when it starts. Null when none is ahead."
        },
    )


class RentalEnvelopeSchema(Schema):
    rental = fields.Nested(RentalSchema)


class RentalListSchema(Schema):
    items = fields.List(fields.Nested(RentalSchema))
    next_cursor = fields.String(allow_none=True)


class HostRentalSchema(Schema):
    """What a host sees of rentals on its node (no renter environment or command)."""

    id = fields.UUID()
    node_id = fields.UUID()
    status = fields.Enum(RentalStatus, by_value=True)
    image = fields.String()
    ports = fields.List(fields.Integer())
    cost_per_hour = Money()
    billed_amount = Money()
    failure_reason = fields.String(allow_none=True)
    exit_code = fields.Integer(allow_none=True)
    start_time = fields.DateTime(allow_none=True)
    end_time = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class HostRentalListSchema(Schema):
    items = fields.List(fields.Nested(HostRentalSchema))
    next_cursor = fields.String(allow_none=True)
