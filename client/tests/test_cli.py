"""`dc` as a subprocess against a local server: exit codes, --json, tables, waiting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from localserver import RENTAL, Reply

NOT_FOUND = {"code": 404, "status": "Not Found", "message": "rental not found"}


def env_for(server) -> dict[str, str]:
    return {"DC_API_URL": server.url, "DC_API_KEY": "dck_test"}


def test_bad_usage_exits_2(dc, server):
    env = env_for(server)
    assert dc("no-such-command", env=env).code == 2
    assert dc("rent", "node-1", env=env).code == 2  # --image is required
    ran = dc("rent", "node-1", "--image", "busybox", "--env", "NOEQUALS", env=env)
    assert ran.code == 2
    assert "KEY=VALUE" in ran.err
    assert dc("search", "--limit", "0", env=env).code == 2
    assert dc("completion", "fish", env=env).code == 2
    assert server.seen == []  # nothing was sent for any of them


def test_a_missing_api_key_is_a_usage_error_that_says_how_to_log_in(dc):
    ran = dc("ls")
    assert ran.code == 2
    assert "dc login" in ran.err


def test_an_api_error_exits_1_with_its_message_on_stderr_and_nothing_on_stdout(dc, server):
    server.on("GET", "/rentals/6a0b1f84-0000-0000-0000-000000000000", Reply(404, NOT_FOUND))
    ran = dc("show", "6a0b1f84-0000-0000-0000-000000000000", "--json", env=env_for(server))
    assert ran.code == 1
    assert "rental not found" in ran.err
    assert ran.out == ""


def test_a_platform_that_cannot_be_reached_exits_1(dc):
    ran = dc("balance", env={"DC_API_URL": "http://127.0.0.1:9", "DC_API_KEY": "k"})
    assert ran.code == 1
    assert "cannot reach" in ran.err


def test_search_json_prints_the_apis_page_and_the_table_shows_the_node_id(dc, server):
    offer = {
        "node_id": "0c7f1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
        "gpu_model": "RTX 4090",
        "gpu_count": 2,
        "gpu_free": 2,
        "gpu_vram_gb": 24,
        "tflops": 82.6,
        "cpu_cores": 16,
        "ram_gb": 64,
        "disk_gb": 500,
        "hourly_rate": "0.8000",
        "location": {"country": "DE", "city": "Berlin"},
        "verified": True,
    }
    server.on("GET", "/offers", Reply(200, {"items": [offer], "next_cursor": None}))
    ran = dc(
        "search",
        "gpu_vram_gb>=24",
        "gpu_count>=2",
        "--sort",
        "price",
        "--json",
        env=env_for(server),
    )
    assert ran.code == 0, ran.err
    assert ran.json() == {"items": [offer], "next_cursor": None}
    assert server.seen[-1].query["q"] == ["gpu_vram_gb>=24 gpu_count>=2"]
    table = dc("search", env={**env_for(server), "COLUMNS": "160"})
    assert offer["node_id"] in table.out
    assert "RTX 4090" in table.out
    assert "$0.8000" in table.out


def test_rent_wait_json_prints_only_the_final_rental_so_jq_can_read_its_id(dc, server):
    active = {
        **RENTAL,
        "status": "active",
        "phase": "running",
        "connection_info": {"host": "h", "ports": {"22": 20017}},
    }
    server.on("POST", "/rentals", Reply(202, {"rental": RENTAL}))
    rid = RENTAL["id"]
    server.on(
        "GET",
        f"/rentals/{rid}",
        Reply(200, {"rental": {**RENTAL, "phase": "pulling", "progress": 0.4}}),
        Reply(200, {"rental": active}),
    )
    ran = dc(
        "rent", RENTAL["node_id"], "--image", "busybox", "--port", "22", "--env", "A=1",
        "--label", "team=ml", "--wait", "--json", "--", "sleep", "60",
        env=env_for(server),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert ran.json()["id"] == rid
    assert ran.json()["status"] == "active"
    assert "pulling" in ran.err  # the phases went to stderr
    (sent,) = server.requests_to("POST", "/rentals")
    assert sent.body == {
        "node_id": RENTAL["node_id"],
        "image": "busybox",
        "command": ["sleep", "60"],
        "env": {"A": "1"},
        "ports": [22],
        "labels": {"team": "ml"},
    }
    assert sent.headers["idempotency-key"]


def test_rent_wait_exits_1_with_the_failure_reason_when_the_rental_does_not_start(dc, server):
    failed = {
        **RENTAL,
        "status": "cancelled",
        "failure_code": "image_not_found",
        "failure_reason": "no such image",
    }
    server.on("POST", "/rentals", Reply(202, {"rental": RENTAL}))
    server.on("GET", f"/rentals/{RENTAL['id']}", Reply(200, {"rental": failed}))
    ran = dc("rent", RENTAL["node_id"], "--image", "nope", "--wait", "--json", env=env_for(server))
    assert ran.code == 1
    assert json.loads(ran.out)["failure_code"] == "image_not_found"
    assert "no such image (image_not_found)" in ran.err


def test_ssh_print_shows_the_system_ssh_command_for_port_22(dc, server):
    active = {
        **RENTAL,
        "status": "active",
        "connection_info": {"host": "proxy.example", "ports": {"22": 20017}},
    }
    server.on("GET", f"/rentals/{RENTAL['id']}", Reply(200, {"rental": active}))
    ran = dc("ssh", RENTAL["id"], "--print", env=env_for(server))
    assert ran.code == 0, ran.err
    assert ran.out.strip() == "ssh -p 20017 root@proxy.example"


def test_ssh_to_a_rental_without_port_22_exits_1_and_says_so(dc, server):
    active = {
        **RENTAL,
        "status": "active",
        "connection_info": {"host": "h", "ports": {"8080": 20001}},
    }
    server.on("GET", f"/rentals/{RENTAL['id']}", Reply(200, {"rental": active}))
    ran = dc("ssh", RENTAL["id"], env=env_for(server))
    assert ran.code == 1
    assert "--port 22" in ran.err


def test_ls_follows_cursors_and_passes_label_filters(dc, server):
    def page(seen):
        if seen.query.get("cursor") == ["next"]:
            return Reply(200, {"items": [{**RENTAL, "id": "second"}], "next_cursor": None})
        return Reply(200, {"items": [RENTAL], "next_cursor": "next"})

    server.on("GET", "/rentals", page)
    ran = dc("ls", "--label", "team=ml", "--json", env=env_for(server))
    assert ran.code == 0, ran.err
    assert [r["id"] for r in ran.json()["items"]] == [RENTAL["id"], "second"]
    assert ran.json()["next_cursor"] is None
    assert server.seen[0].query["label"] == ["team=ml"]


def test_logs_follow_prints_only_new_lines_until_the_rental_ends(dc, server):
    rid = RENTAL["id"]
    server.on(
        "GET",
        f"/rentals/{rid}/logs",
        Reply(200, {"lines": ["one", "two"], "truncated": False}),
        Reply(200, {"lines": ["one", "two", "three"], "truncated": False}),
        Reply(200, {"lines": ["two", "three", "four"], "truncated": False}),
    )
    server.on(
        "GET",
        f"/rentals/{rid}",
        Reply(200, {"rental": {**RENTAL, "status": "active"}}),
        Reply(200, {"rental": {**RENTAL, "status": "completed"}}),
    )
    ran = dc("logs", rid, "--follow", "--interval", "0.05", env=env_for(server))
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == ["one", "two", "three", "four"]


def test_nodes_register_builds_the_apis_shape_from_flags(dc, server):
    created = {
        "node": {"id": "n1", "status": "offline", "specs": {}, "pricing": {}},
        "api_key": "dcn_abc",
    }
    server.on("POST", "/nodes", Reply(201, created))
    ran = dc(
        "nodes", "register", "--name", "box", "--gpu-model", "none", "--gpu-count", "0",
        "--vram", "0", "--tflops", "0", "--cpu-cores", "1", "--ram", "1", "--disk", "1",
        "--rate", "0.60", "--country", "DE", "--json",
        env=env_for(server),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert ran.json()["api_key"] == "dcn_abc"
    (sent,) = server.requests_to("POST", "/nodes")
    assert sent.body["specs"]["cpu_cores"] == 1
    assert sent.body["pricing"] == {"hourly_rate": "0.60", "auto_match_market": False}
    assert sent.body["location"] == {"country": "DE"}


def test_nodes_register_without_specs_is_a_usage_error_naming_what_is_missing(dc, server):
    ran = dc("nodes", "register", "--rate", "1", env=env_for(server))
    assert ran.code == 2
    assert "--gpu-model" in ran.err
    assert server.seen == []


def test_nodes_register_detect_without_the_agent_installed_is_a_clear_usage_error(
    dc, server, tmp_path
):
    # A PATH where `dc` is found and `dc-agent` is not.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "dc").symlink_to(Path(sys.executable).parent / "dc")
    env = {**env_for(server), "PATH": f"{bare}:/usr/bin:/bin"}
    ran = dc("nodes", "register", "--detect", "--rate", "1", "--country", "DE", env=env)
    assert ran.code == 2
    assert "needs the host agent (dc-agent)" in ran.err
    assert server.seen == []


def test_completion_prints_a_bash_script_that_completes_dc(dc):
    ran = dc("completion", "bash")
    assert ran.code == 0
    assert "_DC_COMPLETE" in ran.out
    assert "complete " in ran.out
