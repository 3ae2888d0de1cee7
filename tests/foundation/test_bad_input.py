"""Bad input is a 4xx in the one JSON error shape and stores nothing; never a 500.

One test per class of input that used to reach the database and fail there: text longer than
its column through a derived default, control characters (NUL above all) in text and JSONB
columns, numbers beyond what PostgreSQL's numeric holds, and odd rental bodies. The last test
checks the rule where it is declared: every request field in the OpenAPI document is bounded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from app.enums import NodeStatus
from tests.factories import node_payload
from tests.foundation.helpers import assert_error
from tests.procs import ROOT
from tests.rentals.helpers import set_node_status


def _counts(db) -> dict[str, int]:
    from app.auth.models import User
    from app.billing.models import Transaction
    from app.fleet.models import HostNode, NodeApiKey
    from app.idempotency import IdempotencyKey
    from app.rentals.models import Rental

    db.rollback()
    return {
        model.__tablename__: db.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (User, HostNode, NodeApiKey, Rental, Transaction, IdempotencyKey)
    }


@pytest.fixture
def renter(make_user):
    return make_user("user_bad_input_renter", balance="100.0000")


@pytest.fixture
def online_node(register_node, make_user):
    node = register_node(make_user("user_bad_input_host"))
    set_node_status(node.id, NodeStatus.ONLINE)
    return node


def _rental(node: Any, **overrides: Any) -> dict[str, Any]:
    return {"node_id": str(node), "image": "ubuntu:22.04", **overrides}


# --- Over-long text through a derived default ------------------------------------------------


def test_a_node_name_derived_from_a_long_gpu_model_is_cut_to_fit_its_column(client, user, db):
    response = client.post(
        "/api/v1/nodes",
        json=node_payload(name=None, specs={"gpu_model": "G" * 100, "gpu_count": 64}),
        headers=user.headers,
    )
    assert response.status_code == 201, response.json
    name = response.json["node"]["name"]
    assert len(name) == 100 and name.startswith("64x GGG")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "n" * 101}, "name"),
        ({"specs": {"gpu_model": "g" * 101}}, "specs"),
        ({"location": {"city": "c" * 101}}, "location"),
        ({"specs": {"cuda_version": "1" * 12}}, "specs"),
    ],
)
def test_text_longer_than_its_field_is_a_422_and_no_node_is_stored(
    client, user, db, overrides, field
):
    before = _counts(db)
    response = client.post("/api/v1/nodes", json=node_payload(**overrides), headers=user.headers)
    body = assert_error(response, 422, errors=True)
    assert field in body["errors"]
    assert _counts(db) == before


# --- Control characters in text and JSONB columns --------------------------------------------

NODE_CASES = [
    ({"name": "rig\x00one"}, ["name"]),
    ({"name": "rig\tone"}, ["name"]),
    ({"specs": {"gpu_model": "RTX\x004090"}}, ["specs", "gpu_model"]),
    ({"specs": {"gpu_model": "RTX 4090\n"}}, ["specs", "gpu_model"]),
    ({"specs": {"cuda_version": "12.4\n"}}, ["specs", "cuda_version"]),
    ({"location": {"city": "Austin\x00"}}, ["location", "city"]),
    ({"location": {"city": "Aus\x85tin"}}, ["location", "city"]),
    ({"location": {"country": "U\x00"}}, ["location", "country"]),
    ({"pricing": {"hourly_rate": "1.5\x00"}}, ["pricing", "hourly_rate"]),
]


@pytest.mark.parametrize(("overrides", "path"), NODE_CASES)
def test_a_control_character_in_node_text_is_a_422_naming_the_field(
    client, user, db, overrides, path
):
    before = _counts(db)
    response = client.post("/api/v1/nodes", json=node_payload(**overrides), headers=user.headers)
    errors = assert_error(response, 422, errors=True)["errors"]
    for key in path:
        assert key in errors, errors
        errors = errors[key]
    assert _counts(db) == before


def test_a_control_character_in_a_node_update_is_a_422_and_changes_nothing(client, node, db):
    response = client.patch(
        f"/api/v1/nodes/{node.id}", json={"name": "x\x00"}, headers=node.owner.headers
    )
    assert "name" in assert_error(response, 422, errors=True)["errors"]
    assert (
        client.get(f"/api/v1/nodes/{node.id}", headers=node.owner.headers).json["name"]
        == (node.body["name"])
    )


def test_a_lone_surrogate_in_a_json_string_is_a_422(client, user, db):
    before = _counts(db)
    raw = json.dumps(node_payload(name="PLACEHOLDER")).replace("PLACEHOLDER", "\\ud800")
    response = client.post(
        "/api/v1/nodes", data=raw, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert "name" in assert_error(response, 422, errors=True)["errors"]
    assert _counts(db) == before


@pytest.mark.parametrize(
    "since", ["0279-10-22T20:58:07.92+20:15", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"]
)
def test_a_time_postgresql_cannot_hold_is_a_422(client, user, since):
    # An offset past 15:59 or a year-1 time moved to UTC were 500s (found by schemathesis).
    response = client.get(
        "/api/v1/billing/earnings", query_string={"since": since}, headers=user.headers
    )
    assert "since" in assert_error(response, 422, errors=True)["errors"]


def test_a_utc_time_with_a_large_offset_is_taken_as_the_same_instant(client, user):
    response = client.get(
        "/api/v1/billing/earnings",
        query_string={"since": "2026-01-01T20:15:00+20:15"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.json


def test_item_errors_beside_a_schema_error_are_a_422_with_string_keys(client, user):
    # An invalid list item (errors keyed by its index) and a whole-list rule (a string key) in
    # one answer: JSON output sorts keys, so mixed key types once made this a 500.
    body = {"url": "https://hooks.example.com/x", "events": ["node.offline", "node.offline", "x"]}
    response = client.post("/api/v1/webhooks", json=body, headers=user.headers)
    errors = assert_error(response, 422, errors=True)["errors"]["events"]
    assert set(errors) == {"2", "_schema"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"env": {"A": "x\x00y"}}, "env"),
        ({"env": {"A": "\ud800"}}, "env"),
        ({"env": {"A\x00": "x"}}, "env"),
        ({"command": ["echo", "a\x00b"]}, "command"),
        ({"command": ["echo", "a\nb"]}, "command"),
        ({"image": "ubuntu\x00:22.04"}, "image"),
    ],
)
def test_a_control_character_in_a_rental_is_a_422_and_no_rental_is_stored(
    client, renter, online_node, db, overrides, field
):
    before = _counts(db)
    response = client.post(
        "/api/v1/rentals", json=_rental(online_node.id, **overrides), headers=renter.headers
    )
    assert field in assert_error(response, 422, errors=True)["errors"]
    assert _counts(db) == before


def test_an_env_value_may_span_lines_because_certificates_do(client, renter, online_node):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\tx\r\n-----END CERTIFICATE-----\n"
    response = client.post(
        "/api/v1/rentals", json=_rental(online_node.id, env={"CERT": pem}), headers=renter.headers
    )
    assert response.status_code == 202, response.json
    assert response.json["rental"]["env"] == {"CERT": pem}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reference": "pay\x00-1"}, "reference"),
        ({"description": "top-up\x00"}, "description"),
        ({"description": "d" * 501}, "description"),
    ],
)
def test_a_bad_credit_text_is_a_422_and_no_transaction_is_stored(
    client, admin, user, db, body, field
):
    before = _counts(db)
    payload = {"user_id": str(user.id), "amount": "5.0000", "reference": "pay-1", **body}
    response = client.post("/api/v1/billing/credits", json=payload, headers=admin.headers)
    assert field in assert_error(response, 422, errors=True)["errors"]
    assert _counts(db) == before


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/v1/offers", {"gpu_model": "rtx\x00"}, "gpu_model"),
        ("/api/v1/offers", {"q": "gpu_count>=1\x00"}, "q"),
        ("/api/v1/offers", {"country": "U\x00"}, "country"),
        ("/api/v1/offers", {"near": "1,2\x00"}, "near"),
        ("/api/v1/offers", {"cursor": "abc\x00"}, "cursor"),
        ("/api/v1/nodes", {"cursor": "abc\x00"}, "cursor"),
        ("/api/v1/rentals", {"cursor": "\x1b[31m"}, "cursor"),
        ("/api/v1/billing/transactions", {"cursor": "\x00"}, "cursor"),
    ],
)
def test_a_control_character_in_a_query_argument_is_a_422_naming_it(
    client, user, url, params, field
):
    response = client.get(url, query_string=params, headers=user.headers)
    assert field in assert_error(response, 422, errors=True)["errors"]


def test_a_control_character_in_the_metrics_window_is_a_422(client, node):
    response = client.get(
        f"/api/v1/nodes/{node.id}/metrics",
        query_string={"since": "1h\x00"},
        headers=node.owner.headers,
    )
    assert "since" in assert_error(response, 422, errors=True)["errors"]


# --- Numbers at the edge of PostgreSQL's numeric --------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_vram_gb": "1e-20000"}, "min_vram_gb"),
        ({"min_price": "0E-100000"}, "min_price"),
        ({"max_price": "1E+400"}, "max_price"),
        ({"min_tflops": "0." + "0" * 12 + "1"}, "min_tflops"),
        ({"min_disk_gb": "1" * 16}, "min_disk_gb"),
        ({"min_ram_gb": "-0e0"}, "min_ram_gb"),
        ({"q": "hourly_rate<1e-20000"}, "q"),
        ({"q": "tflops>=0." + "0" * 13 + "1"}, "q"),
        ({"q": "gpu_count>=" + "9" * 13}, "q"),
        ({"limit": "1" + "0" * 30}, "limit"),
    ],
)
def test_a_number_beyond_what_the_database_holds_is_a_422(client, user, params, field):
    response = client.get("/api/v1/offers", query_string=params, headers=user.headers)
    assert field in assert_error(response, 422, errors=True)["errors"]


def test_the_widest_plain_decimals_still_search(client, user):
    response = client.get(
        "/api/v1/offers",
        query_string={"min_price": "0.000000000001", "max_price": "999999999.999999999999"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.json
    assert response.json["items"] == []


@pytest.mark.parametrize("limit", ["0", "201", "-1", "1.5"])
@pytest.mark.parametrize("url", ["/api/v1/nodes", "/api/v1/rentals", "/api/v1/offers"])
def test_a_limit_outside_1_to_200_is_a_422(client, user, url, limit):
    response = client.get(url, query_string={"limit": limit}, headers=user.headers)
    assert "limit" in assert_error(response, 422, errors=True)["errors"]


# --- Odd rental bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ports": [22, 22]}, "ports"),
        ({"ports": list(range(1, 22))}, "ports"),
        ({"ports": [True]}, "ports"),
        ({"env": {f"V{i}": "x" for i in range(101)}}, "env"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A=1"]}, "env"),
        ({"command": []}, "command"),
        ({"command": ["x"] * 257}, "command"),
        ({"command": "echo hi"}, "command"),
        ({"max_hourly_rate": 1.5}, "max_hourly_rate"),
        ({"max_hourly_rate": "1e3"}, "max_hourly_rate"),
        ({"image": "i" * 256}, "image"),
        ({"node_id": "not-a-uuid"}, "node_id"),
    ],
)
def test_an_odd_rental_body_is_a_422_and_no_rental_is_stored(
    client, renter, online_node, db, overrides, field
):
    before = _counts(db)
    response = client.post(
        "/api/v1/rentals", json=_rental(online_node.id, **overrides), headers=renter.headers
    )
    assert field in assert_error(response, 422, errors=True)["errors"]
    assert _counts(db) == before


@pytest.mark.parametrize("body", [[], "rental", 42, None])
def test_a_rental_body_that_is_not_an_object_is_a_422(client, renter, db, body):
    before = _counts(db)
    response = client.post("/api/v1/rentals", json=body, headers=renter.headers)
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code, errors=response.status_code == 422)
    assert _counts(db) == before


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9", "a\x7fb", " ", "tab\there"], ids=repr)
def test_a_bad_idempotency_key_is_a_422_and_no_rental_is_stored(
    client, renter, online_node, db, key
):
    before = _counts(db)
    response = client.post(
        "/api/v1/rentals",
        json=_rental(online_node.id),
        headers={**renter.headers, "Idempotency-Key": key},
    )
    body = assert_error(response, 422, errors=True)
    assert body["errors"] == {"Idempotency-Key": ["Invalid value."]}
    assert _counts(db) == before


def test_a_non_uuid_path_id_is_a_json_404_on_every_kind_of_route(client, user):
    for method, url in [
        ("get", "/api/v1/rentals/nope"),
        ("post", "/api/v1/rentals/nope/stop"),
        ("get", "/api/v1/nodes/nope/metrics"),
        ("get", "/api/v1/nodes/nope/rentals"),
        ("get", "/api/v1/nodes/nope/pricing-suggestion"),
        ("patch", "/api/v1/nodes/%00"),
    ]:
        assert_error(getattr(client, method)(url, headers=user.headers), 404)


# --- The rule, where it is declared ------------------------------------------------------------


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _unbounded(document: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    schema = _resolve(document, schema)
    if "anyOf" in schema:  # a nullable nested object: every branch must be bounded
        return [p for branch in schema["anyOf"] for p in _unbounded(document, branch, where)]
    kind = schema.get("type")
    if "enum" in schema or schema.get("format") in ("uuid", "date-time"):
        return []
    if kind == "string":
        return [] if "maxLength" in schema else [f"{where}: string without maxLength"]
    if kind in ("integer", "number"):
        return [] if {"minimum", "maximum"} <= set(schema) else [f"{where}: number without range"]
    if kind == "array":
        problems = [] if "maxItems" in schema else [f"{where}: array without maxItems"]
        return problems + _unbounded(document, schema.get("items", {}), f"{where}[]")
    if kind == "object":
        problems = []
        for name, sub in (schema.get("properties") or {}).items():
            problems += _unbounded(document, sub, f"{where}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                problems.append(f"{where}: map without maxProperties")
            problems += _unbounded(document, extra, f"{where}{{}}")
        return problems
    if kind == "boolean":
        return []
    return [f"{where}: no type"]


def test_every_request_field_in_the_openapi_document_is_bounded():
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    problems: list[str] = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            for parameter in [*shared, *operation.get("parameters", [])]:
                if parameter["in"] == "path" and parameter["name"] == "secret":
                    continue  # compared in constant time and never stored
                problems += _unbounded(
                    document, parameter["schema"], f"{method} {path} {parameter['name']}"
                )
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                problems += _unbounded(document, body["schema"], f"{method} {path} body")
    assert problems == []


def test_every_schema_a_route_reads_applies_the_text_rule(app):
    from app.validation import BaseSchema

    checked = 0
    for view in app.view_functions.values():
        view_class = getattr(view, "view_class", None)
        for method in getattr(view_class, "methods", None) or ():
            handler = getattr(view_class, method.lower())
            for parameter in (
                getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", [])
            ):
                schema = parameter["schema"]
                schema_class = schema if isinstance(schema, type) else type(schema)
                assert issubclass(schema_class, BaseSchema), (view_class, method, schema_class)
                checked += 1
    assert checked >= 8
