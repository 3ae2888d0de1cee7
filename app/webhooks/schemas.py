from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from app.validation import BaseSchema
from app.webhooks.models import DeliveryStatus, EventType
from app.webhooks.urls import MAX_URL_LENGTH

EVENT_TYPES = [e.value for e in EventType]


class WebhookCreateSchema(BaseSchema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_LENGTH),
        metadata={"description": "https in production; must not resolve to an internal address."},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": "Any of: " + ", ".join(EVENT_TYPES)},
    )

    @validates("events")
    def _events(self, value: list[str], **kwargs: object) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("Each event may be listed once.")


class WebhookSchema(Schema):
    id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String())
    active = fields.Boolean()
    disabled_reason = fields.String(
        allow_none=True, metadata={"description": "Why deliveries stopped (a failing receiver)."}
    )
    disabled_at = fields.DateTime(allow_none=True)
    failing_since = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(
        metadata={"description": "The signing secret, shown once: store it with the receiver."}
    )


class WebhookListSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema))
    next_cursor = fields.String(allow_none=True)


class DeliverySchema(Schema):
    id = fields.UUID()
    event_id = fields.UUID()
    type = fields.String()
    status = fields.String(validate=validate.OneOf([s.value for s in DeliveryStatus]))
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_response = fields.String(
        allow_none=True, metadata={"description": "The start of the receiver's last answer."}
    )
    last_attempt_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)
