#!/usr/bin/env python
"""The main job, scripted against a running local platform (what `make up` ends with).

A host registers a node and starts its agent; an admin gives a renter credit; the renter makes an
API key and, as a program would, searches the offers, rents the node with the local SSH image
(localhost/dc-ssh, `make images`) and a freshly generated SSH key, runs a command in it over `ssh`,
reads its logs, stops it and sees the rental completed.

    python scripts/demo.py --api http://127.0.0.1:8000
    python scripts/demo.py --api ... --node-id <id> --api-key dcn_...   (use a node you registered)

The node's key is kept in var/demo-node.json, so running the demo again reuses the node and its
agent (started with scripts/proc.sh: `make down` stops it, its log is var/log/agent.log).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATE_FILE = ROOT / "var" / "demo-node.json"
IMAGE = "localhost/dc-ssh:latest"  # Debian with sshd, root by key only (scripts/images.sh)
ONSTART = "echo onstart: hello from $(hostname)"
SSH_COMMAND = "nvidia-smi || hostname"
HOST, RENTER, ADMIN = "dev-host", "dev-renter", "dev-admin"
# A node this machine can really serve (the agent refuses limits beyond the hardware).
NODE = {
    "name": "demo-node",
    "specs": {
        "gpu_model": "none",
        "gpu_count": 0,
        "gpu_vram_gb": 0,
        "tflops": 1,
        "cpu_cores": 1,
        "ram_gb": 1,
        "disk_gb": 10,
    },
    "pricing": {"hourly_rate": "0.5000", "auto_match_market": False},
    "location": {"country": "US", "city": "Austin", "lat": 30.27, "lng": -97.74},
}


class DemoFailed(Exception):
    pass


def step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


class Platform:
    def __init__(self, base: str):
        self.api = base.rstrip("/") + "/api/v1"
        self.tokens: dict[str, str] = {}
        from app.auth.tokens import mint_dev_token
        from app.config import load_or_exit

        settings = load_or_exit()
        for clerk_id in (HOST, RENTER, ADMIN):
            self.tokens[clerk_id] = mint_dev_token(
                settings, clerk_id, email=f"{clerk_id}@example.com"
            )

    def use_api_key(self, who: str, key: str) -> None:
        """From now on `who` calls with a user API key (dck_...), as a program does."""
        self.tokens[who] = key

    def call(
        self, who: str, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kwargs.pop("headers", {})}
        response = requests.request(method, self.api + path, headers=headers, timeout=15, **kwargs)
        if response.status_code not in ok:
            raise DemoFailed(
                f"{method} {path} answered {response.status_code}: {response.text[:400]}"
            )
        return response.json() if response.content else None


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def engine_url() -> str:
    """The container engine: DOCKER_HOST, else the Podman socket scripts/services.sh starts."""
    return os.environ.get("DOCKER_HOST") or f"unix://{ROOT}/var/podman/podman.sock"


def engine() -> Any:
    import docker

    return docker.DockerClient(base_url=engine_url())


def agent_running() -> bool:
    result = subprocess.run(
        [str(ROOT / "scripts" / "proc.sh"), "status", "agent"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "running" in result.stdout


def start_agent(base: str, api_key: str) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "proc.sh"), "stop", "agent"], check=False, capture_output=True
    )
    argv = [
        str(ROOT / "scripts" / "proc.sh"),
        "start",
        "agent",
        sys.executable,
        "-m",
        "agent",
        "--platform-url",
        base,
        "--api-key",
        api_key,
        "--data-dir",
        str(ROOT / "var" / "agent"),
        "--docker-host",
        engine_url(),
        "--heartbeat-interval",
        "2",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    say(result.stdout.strip() or result.stderr.strip())
    if result.returncode != 0:
        raise DemoFailed("the agent did not start (see var/log/agent.log)")


def node_for_demo(platform: Platform, args: argparse.Namespace) -> tuple[str, str, bool]:
    """(node id, api key, whether the key is new): given, remembered, or registered now."""
    if args.node_id and args.api_key:
        return args.node_id, args.api_key, True
    if STATE_FILE.is_file():
        saved = json.loads(STATE_FILE.read_text())
        response = requests.get(
            f"{platform.api}/nodes/{saved['node_id']}",
            timeout=10,
            headers={"Authorization": f"Bearer {platform.tokens[HOST]}"},
        )
        if response.status_code == 200 and saved.get("api_url") == platform.api:
            return saved["node_id"], saved["api_key"], False
    created = platform.call(HOST, "POST", "/nodes", json=NODE, ok=(201,))
    node_id, api_key = created["node"]["id"], created["api_key"]
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(
        json.dumps({"node_id": node_id, "api_key": api_key, "api_url": platform.api})
    )
    STATE_FILE.chmod(0o600)
    return node_id, api_key, True


def run(args: argparse.Namespace) -> None:
    base = args.api.rstrip("/")
    platform = Platform(base)

    step(1, f"Platform at {base}")
    health = requests.get(f"{platform.api}/health", timeout=10)
    say(f"health: {health.status_code} {health.json().get('checks')}")

    step(2, f"Host '{HOST}' registers a node and starts its agent")
    node_id, api_key, fresh = node_for_demo(platform, args)
    say(f"node {node_id}" + ("" if fresh else " (registered by an earlier demo)"))
    if fresh:
        say(f"API key (shown once): {api_key}")
    if fresh or not agent_running():
        start_agent(base, api_key)
    else:
        say("agent already running (var/log/agent.log)")
    node = wait_for(
        lambda: _node_if(platform, node_id, {"online", "busy"}),
        45,
        "the node to come online (see var/log/agent.log)",
    )
    say(f"node status: {node['status']}")
    stale = _live_rental_on(platform, node_id)
    if stale:
        say(f"ending an earlier demo rental {stale} first")
        platform.call(RENTER, "POST", f"/rentals/{stale}/stop", ok=(202,))
        wait_for(lambda: _node_if(platform, node_id, {"online"}), 60, "the node to be free")

    step(3, f"Admin '{ADMIN}' tops up the renter's credit")
    me = platform.call(RENTER, "GET", "/me")
    response = requests.post(
        f"{platform.api}/billing/credits",
        timeout=15,
        headers={"Authorization": f"Bearer {platform.tokens[ADMIN]}"},
        json={
            "user_id": me["id"],
            "amount": "5.0000",
            "reference": f"demo-{uuid.uuid4()}",
            "description": "demo credit",
        },
    )
    if response.status_code in (200, 201):
        say(
            f"credited 5.0000; balance now {platform.call(RENTER, 'GET', '/billing/balance')['balance']}"
        )
    elif response.status_code == 404:
        say(
            "POST /billing/credits is not available on this platform: the renter keeps "
            f"its balance of {me['balance']}"
        )
    else:
        raise DemoFailed(f"top-up answered {response.status_code}: {response.text[:300]}")

    step(4, f"Renter '{RENTER}' searches the offers")
    offers = platform.call(RENTER, "GET", "/offers", params={"sort": "price", "limit": 5})
    for offer in offers["items"]:
        mark = "  <- the demo node" if offer["node_id"] == node_id else ""
        say(
            f"{offer['node_id']}  {offer['gpu_count']}x {offer['gpu_model']:<10} "
            f"{offer['cpu_cores']} cores  {offer['hourly_rate']}/h  {offer['location']}{mark}"
        )
    if not any(o["node_id"] == node_id for o in offers["items"]):
        say("(the demo node is not among the cheapest five; renting it by id)")

    step(5, f"Renter makes an API key and an SSH key, and rents the node with {IMAGE}")
    created_key = platform.call(
        RENTER, "POST", "/api-keys", json={"name": "demo program", "scope": "full"}, ok=(201,)
    )
    platform.use_api_key(RENTER, created_key["api_key"])
    say(f"API key {created_key['key']['prefix']}... (scope full): every renter call below uses it")
    key_dir = Path(tempfile.mkdtemp(prefix="dc-demo-ssh-"))
    private_key = key_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dc-demo", "-f", str(private_key)],
        check=True,
    )
    body = {
        "node_id": node_id,
        "image": IMAGE,
        "ports": [22],
        "ssh_keys": [private_key.with_suffix(".pub").read_text().strip()],
        "onstart": ONSTART,
        "labels": {"demo": "yes"},
    }
    rental = platform.call(
        RENTER,
        "POST",
        "/rentals",
        json=body,
        ok=(202,),
        headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"},
    )["rental"]
    rental_id = rental["id"]
    say(
        f"rental {rental_id}: {rental['status']} ({rental['phase']}) at {rental['cost_per_hour']}/h"
    )
    started = time.monotonic()
    active = wait_for(
        lambda: _rental_if(platform, rental_id, {"active", "cancelled"}),
        90,
        "the rental to become active",
    )
    if active["status"] != "active":
        raise DemoFailed(
            f"the rental was cancelled ({active['failure_code']}): {active['failure_reason']}"
        )
    say(f"active after {time.monotonic() - started:.1f} s, phase {active['phase']}")
    say("connection info for the renter:")
    for line in json.dumps(active["connection_info"], indent=2).splitlines():
        say("  " + line)

    step(6, f"Renter runs `{SSH_COMMAND}` in the rental over ssh")
    info = active["connection_info"]
    local = _published_port(rental_id, info["ports"]["22"])
    say(
        f"public port {info['ports']['22']} is served through frps when frps/frpc run; here the "
        f"agent published container port 22 on {info['host']}:{local}, which frps would reach"
    )
    argv = [
        "ssh", "-p", str(local), "-i", str(private_key), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        f"root@{info['host']}", SSH_COMMAND,
    ]  # fmt: skip
    say("$ " + shlex.join(argv))
    result = _ssh_until_it_answers(argv)
    if result.returncode != 0:
        raise DemoFailed(f"ssh failed ({result.returncode}): {result.stderr.strip()}")
    for line in result.stdout.strip().splitlines():
        say(f"  {line}")

    def onstart_logged() -> dict[str, Any] | None:
        logs = platform.call(RENTER, "GET", f"/rentals/{rental_id}/logs", params={"tail": 20})
        return logs if any("onstart:" in line for line in logs["lines"]) else None

    shown = wait_for(onstart_logged, 20, "onstart's output in the logs")
    say("GET /rentals/{id}/logs?tail=20 (asked of the agent through its socket):")
    for line in shown["lines"][-6:]:
        say(f"  {line}")

    step(7, "Renter stops the rental")
    stopping = platform.call(RENTER, "POST", f"/rentals/{rental_id}/stop", ok=(202,))["rental"]
    say(f"stop accepted ({stopping['status']}, {stopping['phase']})")
    done = wait_for(
        lambda: _rental_if(platform, rental_id, {"completed"}), 60, "the rental to complete"
    )
    gone = not engine().containers.list(all=True, filters={"label": f"dc.rental_id={rental_id}"})
    say(
        f"rental {done['status']} at {done['end_time']}; cost {done['cost_so_far']}; "
        f"container {'removed' if gone else 'STILL PRESENT'}"
    )
    node = wait_for(lambda: _node_if(platform, node_id, {"online"}), 20, "the node to be free")
    say(f"node status: {node['status']} (ready for the next renter)")
    if not gone:
        raise DemoFailed("the container is still there after the rental completed")
    shutil.rmtree(key_dir, ignore_errors=True)
    print(
        "\nDemo finished: API key -> rent with an SSH key -> ssh runs a command -> logs -> "
        "stopped -> completed.",
        flush=True,
    )


def _published_port(rental_id: str, public_port: int) -> int:
    """The host port the agent published for the rental's `public_port` (what frps reaches)."""
    for container in engine().containers.list(filters={"label": f"dc.rental_id={rental_id}"}):
        mapping = json.loads(container.labels.get("dc.ports") or "{}")
        for container_port, public in mapping.items():
            bindings = (container.ports or {}).get(f"{container_port}/tcp")
            if public == public_port and bindings:
                return int(bindings[0]["HostPort"])
    raise DemoFailed(f"no container of rental {rental_id} publishes public port {public_port}")


def _ssh_until_it_answers(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """sshd needs a moment to make its host keys: retry until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _node_if(platform: Platform, node_id: str, statuses: set[str]) -> dict[str, Any] | None:
    node = platform.call(HOST, "GET", f"/nodes/{node_id}")
    return node if node["status"] in statuses else None


def _rental_if(platform: Platform, rental_id: str, statuses: set[str]) -> dict[str, Any] | None:
    rental = platform.call(RENTER, "GET", f"/rentals/{rental_id}")["rental"]
    return rental if rental["status"] in statuses else None


def _live_rental_on(platform: Platform, node_id: str) -> str | None:
    for status in ("active", "pending"):
        page = platform.call(RENTER, "GET", "/rentals", params={"status": status})
        for rental in page["items"]:
            if rental["node_id"] == node_id:
                return str(rental["id"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the platform's base URL")
    parser.add_argument(
        "--node-id", help="use this node of dev-host's (with --api-key) instead of registering one"
    )
    parser.add_argument("--api-key", help="the node's API key (dcn_...)")
    args = parser.parse_args(argv)
    if bool(args.node_id) != bool(args.api_key):
        parser.error("--node-id and --api-key go together")
    try:
        run(args)
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except requests.ConnectionError as exc:
        print(
            f"\ndemo failed: the platform at {args.api} is not reachable ({exc})", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
