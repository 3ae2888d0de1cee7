"""Schemas of the hosts' routes: self-tests and maintenance windows."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.validation import BaseSchema, Text, UtcDateTime


class SelfTestQueuedSchema(Schema):
    id = fields.UUID(metadata={"description": "The run id."})
    status = fields.String()


class SelfTestSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"description": "queued, running, passed or failed."})
    trigger = fields.String(
        metadata={"description": "first_connect, hardware_change, reconnect or owner."}
    )
    created_at = fields.DateTime(format="iso")
    started_at = fields.DateTime(format="iso", allow_none=True)
    finished_at = fields.DateTime(format="iso", allow_none=True)
    measured = fields.Dict(
        allow_none=True,
        metadata={
            "description": "{tflops?, gpu_vram_gb?, h2d_gbps?, gpus?, cpu_cores, cpu_gflops, "
            "ram_gb, disk_gb, disk_write_mbps, container_ok, tunnel_ok?}; GPU figures are null "
            "where none was measured."
        },
    )
    failures = fields.List(fields.String())


class SelfTestListSchema(Schema):
    items = fields.List(fields.Nested(SelfTestSchema))
    next_cursor = fields.String(allow_none=True)


class MaintenanceCreateSchema(BaseSchema):
    starts_at = UtcDateTime(required=True)
    ends_at = UtcDateTime(required=True)
    reason = Text(required=True, min_length=1, max_length=500)


class MaintenanceWindowSchema(Schema):
    id = fields.UUID()
    node_id = fields.UUID()
    starts_at = fields.DateTime(format="iso")
    ends_at = fields.DateTime(format="iso")
    reason = fields.String()
    status = fields.String(
        metadata={"description": "scheduled, in_progress, completed or cancelled."}
    )
    created_at = fields.DateTime(format="iso")
    cancelled_at = fields.DateTime(format="iso", allow_none=True)


class MaintenanceListSchema(Schema):
    items = fields.List(fields.Nested(MaintenanceWindowSchema))
    next_cursor = fields.String(allow_none=True)


class RentalMaintenanceSchema(Schema):
    """The maintenance ahead of a rental's node: the rental ends when it starts."""

    starts_at = fields.DateTime(format="iso")
    ends_at = fields.DateTime(format="iso")
    reason = fields.String()
