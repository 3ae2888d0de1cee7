from __future__ import annotations

from marshmallow import Schema, fields, validate


class MarketFiguresSchema(Schema):
    sample_size = fields.Integer(
        metadata={"description": "Comparable nodes with a host-set price."}
    )
    p25 = fields.String(allow_none=True, metadata={"description": "Scaled to this node's GPUs."})
    median = fields.String(allow_none=True)
    p75 = fields.String(allow_none=True)


class DemandSchema(Schema):
    similar_nodes = fields.Integer(
        metadata={"description": "Online or busy nodes, same GPU model."}
    )
    busy_nodes = fields.Integer(metadata={"description": "Of those, nodes with every GPU rented."})
    gpus = fields.Integer(metadata={"description": "The GPUs of those nodes."})
    gpus_in_use = fields.Integer(metadata={"description": "Of those, GPUs rented now."})
    busy_fraction = fields.Float(
        allow_none=True, metadata={"description": "gpus_in_use / gpus: demand is per GPU."}
    )
    multiplier = fields.String(metadata={"description": "Applied to the basis price."})


class BaselineReferenceSchema(Schema):
    reference = fields.String(metadata={"description": "The reference-table row used."})
    unit_price = fields.String(
        metadata={"description": "Per GPU-hour; per node-hour for CPU nodes."}
    )


class PricingSuggestionSchema(Schema):
    suggested_hourly_rate = fields.String(metadata={"description": "Decimal string, 4 places."})
    basis = fields.String(validate=validate.OneOf(["market", "baseline"]))
    market = fields.Nested(MarketFiguresSchema)
    demand = fields.Nested(DemandSchema)
    baseline = fields.Nested(BaselineReferenceSchema, allow_none=True)
