"""The agent process against the real container engine, driven over a real WebSocket."""

from __future__ import annotations

import json
import uuid

from agent.protocol import decode_from_agent
from tests.agent.conftest import IMAGE, node_containers, start_command
from tests.procs import wait_until


def _rental() -> str:
    return str(uuid.uuid4())


def test_agent_says_hello_with_its_hardware_then_sends_valid_heartbeats(platform, agent, node_id):
    hello = platform.wait_for("hello")
    assert platform.frames()[0]["event"] == "hello"
    assert hello["data"]["agent_version"]
    specs = hello["data"]["specs"]
    assert specs["cpu_cores"] >= 1 and specs["ram_gb"] > 0 and specs["disk_gb"] > 0
    # No NVIDIA driver on this machine: a CPU node with empty GPU lists, not a crash.
    assert specs["gpu_count"] == 0 and specs["gpus"] == []
    assert hello["data"]["containers"] == []

    beat = platform.wait_for("heartbeat")
    assert beat["data"]["node_id"] == node_id
    assert beat["data"]["status"] == "online"
    assert beat["data"]["metrics"]["gpu_temp"] == []
    assert beat["data"]["metrics"]["ram_usage_mb"] > 0
    for frame in platform.frames():
        decode_from_agent(json.dumps(frame))  # every frame passes the platform's own schemas
    agent.wait_log("reporting no GPUs")
    assert agent.log().count("reporting no GPUs") == 1


def test_start_instance_runs_the_container_with_labels_limits_env_and_published_ports(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    command_id = platform.send(
        "start_instance",
        start_command(
            rental_id,
            env_vars={"GREETING": "hello world"},
            proxy_port_mapping={"8080": 21001},
            resource_limits={"gpu_indices": [], "cpu_cores": 0.5, "ram_limit": "64m"},
        ),
    )

    started = platform.wait_for("instance_started", rental_id=rental_id)
    platform.wait_for("ack", id=command_id)
    container = engine.containers.get(started["data"]["container_id"])
    assert container.status == "running"
    assert container.labels["dc.rental_id"] == rental_id
    assert container.labels["dc.node_id"] == node_id
    assert container.labels["dc.managed"] == "true"
    assert json.loads(container.labels["dc.ports"]) == {"8080": 21001}
    assert "GREETING=hello world" in container.attrs["Config"]["Env"]
    assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) > 0
    platform.wait_for("heartbeat", after=platform.mark(), status="busy")


def test_a_repeated_start_for_the_same_rental_answers_again_and_starts_nothing_new(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    platform.send("start_instance", start_command(rental_id))
    first = platform.wait_for("instance_started", rental_id=rental_id)
    mark = platform.mark()
    again_id = platform.send("start_instance", start_command(rental_id))

    second = platform.wait_for("instance_started", after=mark, rental_id=rental_id)
    platform.wait_for("ack", id=again_id)
    assert second["data"]["container_id"] == first["data"]["container_id"]
    assert len(node_containers(engine, node_id)) == 1


def test_stop_instance_removes_the_container_and_a_repeated_stop_still_answers_stopped(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    platform.send("start_instance", start_command(rental_id))
    container_id = platform.wait_for("instance_started", rental_id=rental_id)["data"][
        "container_id"
    ]

    stop_id = platform.send(
        "stop_instance", {"rental_id": rental_id, "container_id": container_id, "grace_seconds": 1}
    )
    stopped = platform.wait_for("instance_stopped", rental_id=rental_id)
    platform.wait_for("ack", id=stop_id)
    assert stopped["data"]["container_id"] == container_id
    assert isinstance(stopped["data"]["exit_code"], int)
    assert node_containers(engine, node_id) == []

    mark = platform.mark()
    again_id = platform.send(
        "stop_instance", {"rental_id": rental_id, "container_id": container_id}
    )
    again = platform.wait_for("instance_stopped", after=mark, rental_id=rental_id)
    platform.wait_for("ack", id=again_id)
    assert again["data"]["exit_code"] is None
    unknown = _rental()
    platform.send("stop_instance", {"rental_id": unknown})
    assert platform.wait_for("instance_stopped", rental_id=unknown)["data"]["container_id"] is None


def test_a_container_that_exits_by_itself_is_reported_stopped_with_its_exit_code(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    platform.send("start_instance", start_command(rental_id, command=["sh", "-c", "exit 7"]))

    stopped = platform.wait_for("instance_stopped", rental_id=rental_id)
    assert stopped["data"]["exit_code"] == 7
    wait_until(lambda: node_containers(engine, node_id) == [], 10, what="container removed")
    assert len(platform.frames("instance_stopped")) == 1


def test_a_draining_node_refuses_new_starts_and_keeps_the_running_ones(
    platform, agent, engine, node_id
):
    running = _rental()
    platform.send("start_instance", start_command(running))
    container_id = platform.wait_for("instance_started", rental_id=running)["data"]["container_id"]

    drain_id = platform.send("drain_node", {"node_id": node_id})
    platform.wait_for("ack", id=drain_id)
    refused = _rental()
    platform.send("start_instance", start_command(refused))

    failed = platform.wait_for("instance_failed", rental_id=refused)
    assert failed["data"]["reason"] == "draining"
    assert [c.id for c in node_containers(engine, node_id)] == [container_id]
    assert engine.containers.get(container_id).status == "running"
    # The running rental still answers as started when the platform repeats its start.
    mark = platform.mark()
    platform.send("start_instance", start_command(running))
    platform.wait_for("instance_started", after=mark, rental_id=running)


def test_bad_commands_get_an_error_or_instance_failed_and_leave_nothing_behind(
    platform, agent, engine, node_id
):
    platform.send_raw("this is not json")
    platform.wait_for("error", code="invalid_json")
    platform.send("format_disk", {"really": True})
    platform.wait_for("error", code="unknown_event")

    bad = {
        "shell characters in the image": {"image": "busybox; rm -rf /"},
        "a port out of range": {"proxy_port_mapping": {"70000": 21001}},
        "a public port out of range": {"proxy_port_mapping": {"22": 0}},
        "a memory limit that does not parse": {"resource_limits": {"ram_limit": "lots"}},
        "cpu cores that are not a number": {"resource_limits": {"cpu_cores": "many"}},
        "env that is not a mapping": {"env_vars": ["A=1"]},
        "a command that is not a list": {"command": "sh -c 'exit 1'"},
    }
    for why, override in bad.items():
        rental_id = _rental()
        command_id = platform.send("start_instance", start_command(rental_id, **override))
        failed = platform.wait_for("instance_failed", rental_id=rental_id)
        assert failed["data"]["reason"].startswith("The rental's settings are invalid"), why
        platform.wait_for("error", id=command_id)
        platform.wait_for("ack", id=command_id)
    no_rental = platform.send("start_instance", {"image": IMAGE})
    platform.wait_for("error", code="invalid_data", id=no_rental)
    bad_stop = platform.send("stop_instance", {"rental_id": "not-a-uuid"})
    platform.wait_for("error", code="invalid_data", id=bad_stop)

    assert agent.alive()
    assert node_containers(engine, node_id) == []
    rental_id = _rental()
    platform.send("start_instance", start_command(rental_id))
    platform.wait_for("instance_started", rental_id=rental_id)


def test_start_failures_give_reasons_a_renter_can_act_on_and_leave_no_container(
    platform, agent, engine, node_id
):
    cases = {
        "No such image": {"image": "localhost/no-such-image:1.0"},
        "was not found in the image": {"command": ["no-such-program", "--flag"]},
        "GPU 0 is not present on this node": {
            "resource_limits": {"gpu_indices": ["0"], "cpu_cores": 1, "ram_limit": "64m"}
        },
        "Out of memory": {"resource_limits": {"gpu_indices": [], "ram_limit": "900000g"}},
        "CPU cores": {"resource_limits": {"gpu_indices": [], "cpu_cores": 4000}},
    }
    for expected, override in cases.items():
        rental_id = _rental()
        platform.send("start_instance", start_command(rental_id, **override))
        failed = platform.wait_for("instance_failed", rental_id=rental_id)
        assert expected in failed["data"]["reason"], failed
        assert node_containers(engine, node_id) == [], expected
    assert platform.frames("instance_started") == []
