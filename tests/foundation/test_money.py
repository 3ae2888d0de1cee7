"""Money: decimal strings only, at most 4 places, one rounding rule."""

from __future__ import annotations

from decimal import Decimal

import pytest
from marshmallow import Schema, ValidationError

from app.money import Money, quantize, to_wire


class PriceSchema(Schema):
    amount = Money(required=True)


class FeeSchema(Schema):
    amount = Money(required=True, allow_zero=True)


@pytest.mark.parametrize(
    ("sent", "loaded"),
    [
        ("12.5", Decimal("12.5000")),
        ("0.0001", Decimal("0.0001")),
        (" 3.25 ", Decimal("3.2500")),
        ("1000000000", Decimal("1000000000.0000")),
        (7, Decimal("7.0000")),
    ],
)
def test_decimal_strings_load_exactly(sent, loaded):
    value = PriceSchema().load({"amount": sent})["amount"]
    assert value == loaded and isinstance(value, Decimal)
    assert value.as_tuple().exponent == -4


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (12.5, "string"),
        (0.1, "string"),
        ("1.23456", "4 decimal places"),
        ("0.00001", "4 decimal places"),
        ("abc", "decimal string"),
        ("", "decimal string"),
        (True, "decimal string"),
        (None, "null"),
        ([], "decimal string"),
        ({"amount": "1"}, "decimal string"),
        ("NaN", "decimal string"),
        ("Infinity", "decimal string"),
        ("-1", "greater than"),
        ("0", "greater than"),
        ("1000000000.0001", "at most"),
        ("1e400", "decimal string"),
        ("1e3", "decimal string"),
        ("99999999999999", "decimal string"),
    ],
)
def test_floats_excess_places_and_nonsense_are_refused(sent, message):
    with pytest.raises(ValidationError) as raised:
        PriceSchema().load({"amount": sent})
    assert message in str(raised.value.messages["amount"])


def test_zero_is_allowed_only_where_the_field_says_so():
    assert FeeSchema().load({"amount": "0"})["amount"] == Decimal("0.0000")
    with pytest.raises(ValidationError):
        FeeSchema().load({"amount": "-0.0001"})


def test_money_is_written_as_a_string_with_four_places():
    assert PriceSchema().dump({"amount": Decimal("1.5")}) == {"amount": "1.5000"}
    assert PriceSchema().dump({"amount": Decimal("2")}) == {"amount": "2.0000"}
    assert PriceSchema().dump({"amount": None}) == {"amount": None}
    assert to_wire(Decimal("0.00005")) == "0.0001"


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        ("0.00005", "0.0001"),
        ("0.00004", "0.0000"),
        ("-0.00005", "-0.0001"),
        ("1.23455", "1.2346"),
        ("2.99995", "3.0000"),
    ],
)
def test_the_one_rounding_rule_is_half_up_to_four_places(value, rounded):
    assert quantize(Decimal(value)) == Decimal(rounded)
    assert str(quantize(Decimal(value))) == rounded


def test_a_float_price_is_refused_by_the_api(client, user):
    from tests.factories import node_payload

    for bad in (1.2, "1.23456", "-1", "free"):
        response = client.post(
            "/api/v1/nodes", json=node_payload(pricing={"hourly_rate": bad}), headers=user.headers
        )
        assert response.status_code == 422, bad
        assert "hourly_rate" in response.json["errors"]["pricing"]
