"""Reconnects and restarts: the container engine is the agent's only state, and nothing is lost."""

from __future__ import annotations

import uuid

from tests.agent.conftest import IMAGE, node_containers, start_command
from tests.procs import wait_until

TERM_FRIENDLY = ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]


def test_after_a_dropped_connection_the_agent_reconnects_and_reports_its_containers(
    platform, agent, engine, node_id
):
    rental_id = str(uuid.uuid4())
    platform.send("start_instance", start_command(rental_id))
    container_id = platform.wait_for("instance_started", rental_id=rental_id)["data"][
        "container_id"
    ]
    mark = platform.mark()

    platform.drop()
    platform.wait_connected(count=2)
    hello = platform.wait_for("hello", after=mark)
    assert hello["data"]["containers"] == [
        {"rental_id": rental_id, "container_id": container_id, "state": "running"}
    ]
    # The platform's reconcile: this rental is not live any more, so it sends a stop.
    platform.send(
        "stop_instance", {"rental_id": rental_id, "container_id": container_id, "grace_seconds": 1}
    )
    platform.wait_for("instance_stopped", after=mark, rental_id=rental_id)
    assert node_containers(engine, node_id) == []


def test_an_agent_restart_loses_nothing_and_reports_what_ended_while_it_was_away(
    platform, start_agent, engine, node_id, tmp_path
):
    first = start_agent(platform.url)
    platform.wait_connected()
    keeps, ends = str(uuid.uuid4()), str(uuid.uuid4())
    for rental_id in (keeps, ends):
        platform.send("start_instance", start_command(rental_id, command=TERM_FRIENDLY))
        platform.wait_for("instance_started", rental_id=rental_id)
    first.stop()
    assert not first.alive()
    assert {c.status for c in node_containers(engine, node_id)} == {"running"}

    ended = engine.containers.get(f"dc-rental-{ends}")
    ended.stop(timeout=5)  # the rental's process ends while no agent is watching
    ended_id = ended.id
    mark = platform.mark()
    start_agent(platform.url)
    platform.wait_connected(count=2)

    hello = platform.wait_for("hello", after=mark)
    states = {c["rental_id"]: c["state"] for c in hello["data"]["containers"]}
    assert states == {keeps: "running", ends: "exited"}
    stopped = platform.wait_for("instance_stopped", after=mark, rental_id=ends)
    assert stopped["data"] == {"rental_id": ends, "container_id": ended_id, "exit_code": 0}
    wait_until(
        lambda: [c.labels["dc.rental_id"] for c in node_containers(engine, node_id)] == [keeps],
        10,
        what="only the running rental left",
    )
    assert not platform.frames("instance_stopped")[1:]


def test_a_refused_key_is_reported_plainly_and_the_agent_does_not_exit(platform, start_agent):
    agent = start_agent(platform.url, key="dcn_not-the-right-key-000000")
    agent.wait_log("the platform refused the API key (HTTP 401)")
    assert platform.refused == 1 and platform.connections == 0
    assert agent.alive()


def test_the_agent_stops_cleanly_on_sigterm_and_leaves_rentals_running(
    platform, agent, engine, node_id
):
    rental_id = str(uuid.uuid4())
    platform.send("start_instance", start_command(rental_id, image=IMAGE))
    platform.wait_for("instance_started", rental_id=rental_id)
    agent.stop(timeout=10)
    assert agent.popen is not None and agent.popen.returncode == 0
    assert "dc-agent stopped" in agent.log()
    assert [c.status for c in node_containers(engine, node_id)] == ["running"]


def test_a_rental_network_left_without_its_container_is_removed(
    platform, start_agent, engine, node_id
):
    rental_id = str(uuid.uuid4())
    engine.networks.create(
        f"dc-{rental_id}",
        driver="bridge",
        labels={"dc.managed": "true", "dc.node_id": node_id, "dc.rental_id": rental_id},
    )
    kept = str(uuid.uuid4())
    start_agent(platform.url)
    platform.wait_connected()
    platform.send("start_instance", start_command(kept))
    platform.wait_for("instance_started", rental_id=kept)
    wait_until(
        lambda: engine.networks.list(names=[f"dc-{rental_id}"]) == [],
        20,
        what="the orphan network removed",
    )
    assert [n.name for n in engine.networks.list(names=[f"dc-{kept}"])] == [f"dc-{kept}"]
