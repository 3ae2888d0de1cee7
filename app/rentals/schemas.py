from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate, validates

from agent.protocol import MAX_LOG_TAIL, valid_image
from app.enums import RentalStatus
from app.money import POSITIVE_PATTERN, Money
from app.pagination import PageArgsSchema
from app.rentals.launch import MAX_LABELS, LabelFilter, LaunchOptionsSchema
from app.rentals.state import FAILURE_CODES, PHASES
from app.validation import BaseSchema, BoundedDict, BoundedList, Text

POSITIVE = {"pattern": POSITIVE_PATTERN}

MAX_PORTS = 20
MAX_ENV = 100
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$", re.ASCII)


class RentalCreateSchema(LaunchOptionsSchema):
    node_id = fields.UUID(required=True)
    image = Text(required=True, min_length=1, max_length=255)
    command = BoundedList(
        Text(max_length=4096),
        min_items=1,
        max_items=256,
        load_default=None,
        allow_none=True,
    )
    env = BoundedDict(
        keys=Text(
            max_length=256,
            validate=validate.Regexp(
                _ENV_NAME,
                error="Environment variable names are letters, digits and _, "
                "not starting with a digit.",
            ),
        ),
        # A value may span lines (a certificate, a key); control characters are still refused.
        values=Text(max_length=32768, multiline=True),
        max_items=MAX_ENV,
        load_default=dict,
    )
    ports = BoundedList(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=65535)),
        max_items=MAX_PORTS,
        unique=True,
        load_default=list,
    )
    max_hourly_rate = Money(load_default=None, allow_none=True, metadata=POSITIVE)
    gpu_count = fields.Integer(
        strict=True,
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=64),
        metadata={
            "description": "How many of the node's GPUs to rent (default: all of them, the whole "
            "node). The rental gets the same share of CPU cores and RAM and pays "
            "hourly_rate x gpu_count / the node's GPUs. A CPU-only node is rented whole (0)."
        },
    )
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


class RentalQueryArgsSchema(PageArgsSchema):
    status = fields.Enum(RentalStatus, by_value=True, load_default=None)
    label = fields.List(
        LabelFilter(),
        load_default=list,
        validate=validate.Length(max=MAX_LABELS),
        metadata={"description": "key=value; several must all match"},
    )


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
    gpu_count = fields.Integer()
    cost_so_far = Money(allow_none=True)
    credit_minutes_left = fields.Integer(allow_none=True)
    connection_info = fields.Dict(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    failure_code = fields.String(allow_none=True, metadata={"enum": list(FAILURE_CODES)})
    phase = fields.String(metadata={"enum": list(PHASES)})
    progress = fields.Float(allow_none=True)
    entrypoint = fields.List(fields.String(), allow_none=True)
    onstart = fields.String(allow_none=True)
    ssh_keys = fields.List(fields.String())
    labels = fields.Dict(keys=fields.String(), values=fields.String())
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


class RentalLogsArgsSchema(BaseSchema):
    tail = fields.Integer(load_default=200, validate=validate.Range(min=1, max=MAX_LOG_TAIL))


class RentalLogsSchema(Schema):
    lines = fields.List(fields.String())
    truncated = fields.Boolean()


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
    gpu_count = fields.Integer()
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
