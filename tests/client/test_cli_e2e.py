"""A renter's whole session with `dc` against the real platform and a real agent and engine:
search -> rent --wait -> show/ls -> logs -> stop --wait, each `--json` parsed; exit codes 1 and 2;
the scripted `dc rent ... --wait --json | jq -r .id` then `dc stop`."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from tests.client.conftest import COMMAND, IMAGE
from tests.procs import wait_until

pytestmark = pytest.mark.slow

# Werkzeug's message for a path no route matches (a route's own 404 says "No such rental.").
ROUTE_MISSING = "Nothing matches the given URI"


def offered(dc, renter, node_id: str) -> dict:
    """Search (q language) until the node is offered; offers are cached per node version."""

    def find():
        page = dc(
            "search", "cpu_cores>=1 country in [DE]", "--sort", "price", "--json", as_user=renter
        )
        items = page.ok().json()["items"]
        return next((o for o in items if o["node_id"] == node_id), None)

    return wait_until(find, 20, interval=0.5, what="the node in the search results")


def test_a_renter_searches_rents_waits_reads_logs_and_stops_with_dc(
    dc, online_node, renter, platform
):
    node_id = online_node["id"]
    offer = offered(dc, renter, node_id)
    assert offer["hourly_rate"] == "0.6000"
    assert offer["cpu_cores"] == 1

    rented = dc(
        "rent", node_id, "--image", IMAGE, "--port", "8080", "--env", "GREETING=hello",
        "--wait", "--json", "--", *COMMAND,
        as_user=renter,
    )  # fmt: skip
    rental = rented.ok().json()
    assert rental["status"] == "active", f"{rental}\n{platform.logs()}"
    assert rental["node_id"] == node_id
    assert rental["command"] == COMMAND
    assert set(rental["connection_info"]["ports"]) == {"8080"}
    assert "pending" in rented.err  # the progress display went to stderr, not into the JSON
    rental_id = rental["id"]

    shown = dc("show", rental_id, "--json", as_user=renter).ok().json()
    assert (shown["id"], shown["status"]) == (rental_id, "active")
    listed = dc("ls", "--json", as_user=renter).ok().json()
    assert [r["id"] for r in listed["items"]] == [rental_id]
    assert listed["next_cursor"] is None
    table = dc("ls", as_user=renter).ok()
    assert rental_id in table.out and "active" in table.out

    assert wait_until(
        lambda: (
            "hello from dc"
            in dc("logs", rental_id, "--tail", "50", "--json", as_user=renter).ok().json()["lines"]
        ),
        15,
        what="the container's output in dc logs",
    )

    stopped = dc("stop", rental_id, "--wait", "--json", as_user=renter).ok().json()
    assert stopped["id"] == rental_id
    assert stopped["status"] == "completed"
    assert stopped["end_time"] is not None
    again = dc("stop", rental_id, "--json", as_user=renter).ok().json()
    assert again["status"] == "completed"  # stopping twice changes nothing

    balance = dc("balance", "--json", as_user=renter).ok().json()
    assert set(balance) == {"balance"} and "." in balance["balance"]
    ledger = dc("transactions", "--json", as_user=renter).ok().json()
    assert "items" in ledger and "next_cursor" in ledger


def test_dc_logs_of_an_unknown_rental_exits_1_with_the_routes_own_404(dc, renter, platform):
    probe = dc("logs", str(uuid.uuid4()), "--json", as_user=renter)
    assert probe.code == 1
    assert ROUTE_MISSING not in probe.err
    assert "No such rental." in probe.err and "404" in probe.err


def test_an_unknown_rental_exits_1_with_the_apis_message_on_stderr(dc, renter):
    ran = dc("show", str(uuid.uuid4()), "--json", as_user=renter)
    assert ran.code == 1
    assert ran.out == ""
    assert "error: No such rental. (404 Not Found)" in ran.err
    stop = dc("stop", str(uuid.uuid4()), as_user=renter)
    assert stop.code == 1


def test_bad_usage_exits_2_before_anything_is_sent(dc, renter, platform):
    assert dc("rent", str(uuid.uuid4()), as_user=renter).code == 2  # no --image
    assert dc("rent", "--image", IMAGE, as_user=renter).code == 2  # no NODE
    assert dc("search", "--limit", "500", as_user=renter).code == 2
    assert dc("frobnicate", as_user=renter).code == 2
    assert dc("ls").code == 2  # no key anywhere


def test_a_query_the_api_refuses_exits_1_naming_the_field(dc, renter):
    ran = dc("search", "no_such_field>=1", "--json", as_user=renter)
    assert ran.code == 1
    assert "422" in ran.err
    assert "no_such_field" in ran.err


def test_a_script_rents_with_jq_then_stops_by_id(dc_env, dc, online_node, renter, api_key_for):
    if shutil.which("jq") is None:
        pytest.fail("jq is needed for this test (apt-get install jq)")
    node_id = online_node["id"]
    offered(dc, renter, node_id)
    env = {**dc_env, "DC_API_KEY": api_key_for(renter), "NODE": node_id, "IMAGE": IMAGE}
    script = (
        "set -euo pipefail\n"
        'id=$(dc rent "$NODE" --image "$IMAGE" --wait --json -- sleep 3600 | jq -r .id)\n'
        'dc stop "$id" --wait --json | jq -r \'.id + " " + .status\'\n'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr
    rental_id, status = done.stdout.split()
    assert uuid.UUID(rental_id)
    assert status in ("completed", "cancelled")
    shown = dc("show", rental_id, "--json", as_user=renter).ok().json()
    assert shown["status"] == status
