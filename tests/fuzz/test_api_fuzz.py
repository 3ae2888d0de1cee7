"""Schemathesis against the live API (a real gunicorn server) over docs/openapi.json.

Every operation is fuzzed with valid and invalid data (positive and negative modes) as a signed-in
user; the admin-only operations with an admin token. Then the stateful phase chains operations
through the document's links (POST /nodes -> GET/PATCH /nodes/{node_id}, ...). The failure
condition is any server error (5xx) or a response that does not match the document.

Budget: FUZZ_EXAMPLES examples per operation (default 200, positive and negative together) and
FUZZ_SCENARIOS stateful scenarios of up to 6 calls (default 100): about four minutes on a busy
2-core machine, server start included. Raise them for a longer run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.procs import ROOT, api_server, free_port, running, wait_http

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "100"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Operations only an admin may call (any other user gets 403 before the body is read).
ADMIN_OPERATIONS = {"POST /api/v1/billing/credits", "GET /api/v1/billing/invariants"}

schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    database="none",  # every run starts fresh: no example database under the repository
)


@pytest.fixture(scope="module")
def live(_database, settings) -> Iterator[dict[str, Any]]:
    """The server's base URL and the headers of a user and of an admin."""
    from app.auth.tokens import mint_dev_token

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(api_server(port, name="fuzz-api")) as (proc,):
        wait_http(f"{base}/api/v1/health", proc=proc)
        yield {
            "base_url": base,
            "user": {"Authorization": f"Bearer {mint_dev_token(settings, 'fuzz-user')}"},
            "admin": {"Authorization": f"Bearer {mint_dev_token(settings, 'test-admin')}"},
            "proc": proc,
        }


def _headers(live: dict[str, Any], case: schemathesis.Case) -> dict[str, str]:
    label = f"{case.operation.method.upper()} {case.operation.path}"
    return live["admin"] if label in ADMIN_OPERATIONS else live["user"]


@pytest.fixture
def seeded(live) -> dict[str, Any]:
    """The fuzz user exists and owns a node, so ids in the data are not always unknown."""
    response = requests.post(
        f"{live['base_url']}/api/v1/nodes",
        json={
            "specs": {
                "gpu_model": "RTX 4090",
                "gpu_count": 2,
                "gpu_vram_gb": 24,
                "tflops": 82.6,
                "cpu_cores": 16,
                "ram_gb": 64,
                "disk_gb": 1000,
            },
            "pricing": {"hourly_rate": "1.2000"},
            "location": {"country": "US"},
        },
        headers=live["user"],
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return live


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=False,
)
def test_no_operation_answers_a_server_error_or_breaks_its_documented_shape(case, seeded):
    case.call_and_validate(
        base_url=seeded["base_url"], headers=_headers(seeded, case), checks=CHECKS, timeout=30
    )


def test_stateful_sequences_of_calls_never_give_a_server_error(seeded):
    machine = schema.as_state_machine()
    live = seeded

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": live["base_url"], "headers": _headers(live, case), "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
    )
    assert live["proc"].alive()
