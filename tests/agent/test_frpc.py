"""The frpc config the agent writes (frp v0.52+ TOML) and how it runs frpc."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from agent.frpc import Proxy, render_config
from tests.agent.conftest import TEST_KEY, start_command
from tests.agent.stand_in import PlatformStandIn
from tests.procs import ROOT, wait_until

TUNNEL = {
    "server_addr": "frp.example.com",
    "server_port": 7000,
    "token": 'tok"en\\with\x7fodd',
    "user": "node-{node}",
    "metadatas": {"node_key_hash": "abc123", "tricky key": "v"},
}


def _tunnel(node_id: str) -> dict:
    return {**TUNNEL, "user": f"node-{node_id}"}


def test_the_rendered_config_has_the_documented_frpc_keys():
    rental = str(uuid.uuid4())
    text = render_config(
        tunnel=_tunnel("n1"),
        local_ip="127.0.0.1",
        admin_port=7400,
        admin_user="dc-agent",
        admin_password="secret",
        proxies=[Proxy(rental, 22, 40022, 21017), Proxy(rental, 8888, 40888, 21018)],
    )
    config = tomllib.loads(text)

    assert config["serverAddr"] == "frp.example.com"
    assert config["serverPort"] == 7000
    assert config["user"] == "node-n1"
    assert config["auth"] == {"method": "token", "token": 'tok"en\\with\x7fodd'}
    assert config["metadatas"] == {"node_key_hash": "abc123", "tricky key": "v"}
    assert config["webServer"] == {
        "addr": "127.0.0.1",
        "port": 7400,
        "user": "dc-agent",
        "password": "secret",
    }
    assert config["loginFailExit"] is False
    assert config["proxies"] == [
        {
            "name": f"rental-{rental}-22",
            "type": "tcp",
            "localIP": "127.0.0.1",
            "localPort": 40022,
            "remotePort": 21017,
            "metadatas": {"rental_id": rental, "container_port": "22"},
        },
        {
            "name": f"rental-{rental}-8888",
            "type": "tcp",
            "localIP": "127.0.0.1",
            "localPort": 40888,
            "remotePort": 21018,
            "metadatas": {"rental_id": rental, "container_port": "8888"},
        },
    ]
    assert "proxies" not in tomllib.loads(
        render_config(
            tunnel=_tunnel("n1"),
            proxies=[],
            local_ip="127.0.0.1",
            admin_port=1,
            admin_user="u",
            admin_password="p",
        )
    )


@pytest.fixture
def tunnel_platform(node_id):
    server = PlatformStandIn(api_key=TEST_KEY, node_id=node_id, tunnel=_tunnel(node_id)).start()
    yield server
    server.stop()


def _config(data_dir: Path) -> dict:
    return tomllib.loads((data_dir / "frpc.toml").read_text())


def test_without_frpc_the_agent_says_so_once_and_writes_the_config_for_each_rental_port(
    tunnel_platform, start_agent, engine, node_id, tmp_path
):
    data_dir = tmp_path / "data"
    agent = start_agent(tunnel_platform.url, data_dir=data_dir)
    tunnel_platform.wait_connected()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tunnel_platform.send(
        "start_instance", start_command(first, proxy_port_mapping={"22": 21005, "8080": 21006})
    )
    first_id = tunnel_platform.wait_for("instance_started", rental_id=first)["data"]["container_id"]
    tunnel_platform.send("start_instance", start_command(second, proxy_port_mapping={"22": 21007}))
    tunnel_platform.wait_for("instance_started", rental_id=second)

    wait_until(lambda: len(_config(data_dir).get("proxies", [])) == 3, 10, what="3 proxies")
    config = _config(data_dir)
    assert config["user"] == f"node-{node_id}"
    assert config["serverAddr"] == "frp.example.com" and config["serverPort"] == 7000
    assert config["metadatas"]["node_key_hash"] == "abc123"
    ports = engine.containers.get(first_id).attrs["NetworkSettings"]["Ports"]
    by_name = {p["name"]: p for p in config["proxies"]}
    assert by_name[f"rental-{first}-22"]["localPort"] == int(ports["22/tcp"][0]["HostPort"])
    assert by_name[f"rental-{first}-22"]["remotePort"] == 21005
    assert by_name[f"rental-{first}-8080"]["remotePort"] == 21006
    assert by_name[f"rental-{second}-22"]["remotePort"] == 21007
    assert stat.S_IMODE(os.stat(data_dir / "frpc.toml").st_mode) == 0o600  # holds the token
    assert agent.log().count("frpc not found") == 1

    tunnel_platform.send("stop_instance", {"rental_id": first, "grace_seconds": 0})
    tunnel_platform.wait_for("instance_stopped", rental_id=first)
    assert [p["name"] for p in _config(data_dir)["proxies"]] == [f"rental-{second}-22"]


def _events(data_dir: Path) -> list[dict]:
    path = data_dir / "fake-frpc-events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_agent_starts_frpc_reloads_it_on_change_and_restarts_it_when_it_dies(
    tunnel_platform, start_agent, node_id, tmp_path
):
    fake = tmp_path / "frpc"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT}/tests/agent/fake_frpc.py "$@"\n')
    fake.chmod(0o755)
    data_dir = tmp_path / "data"
    agent = start_agent(tunnel_platform.url, "--frpc-bin", str(fake), data_dir=data_dir)
    tunnel_platform.wait_connected()

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tunnel_platform.send("start_instance", start_command(first, proxy_port_mapping={"22": 21005}))
    tunnel_platform.wait_for("instance_started", rental_id=first)
    wait_until(lambda: _events(data_dir), 15, what="frpc started")
    assert _events(data_dir)[0]["event"] == "start"
    assert _events(data_dir)[0]["proxies"] == [f"rental-{first}-22"]

    tunnel_platform.send("start_instance", start_command(second, proxy_port_mapping={"22": 21006}))
    tunnel_platform.wait_for("instance_started", rental_id=second)
    wait_until(
        lambda: any(e["event"] == "reload" and len(e["proxies"]) == 2 for e in _events(data_dir)),
        15,
        what="frpc reloaded with 2 proxies",
    )

    pid = _events(data_dir)[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: [e for e in _events(data_dir) if e["event"] == "start" and e["pid"] != pid],
        15,
        what="frpc restarted",
    )
    agent.wait_log("frpc exited")
    restarted = [e for e in _events(data_dir) if e["event"] == "start"][-1]
    assert sorted(restarted["proxies"]) == sorted([f"rental-{first}-22", f"rental-{second}-22"])

    agent.stop()
    wait_until(lambda: not _alive(restarted["pid"]), 10, what="frpc stopped with the agent")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
