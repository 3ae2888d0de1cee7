"""Rental containers as a careful host runs them, and the protocol's additions, against the real
engine through the real agent process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from datetime import UTC, datetime, timedelta

from agent.protocol import MAX_FRAME_BYTES
from agent.runspec import CAP_ADD
from tests.agent.conftest import IMAGE, TEST_KEY, node_containers, start_command
from tests.agent.stand_in import PlatformStandIn
from tests.procs import wait_until

# The capability bits of CAP_ADD (linux/capability.h), as /proc/<pid>/status shows them.
CAP_BITS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "NET_BIND_SERVICE": 10,
    "SYS_CHROOT": 18,
    "AUDIT_WRITE": 29,
}
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1c2VyLWtleS1mb3ItdGVzdHMtb25seS0wMDAwMDA= renter@laptop"
)
IMAGE_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDimage-own-key image@build"


def _rental() -> str:
    return str(uuid.uuid4())


def _file(container, path: str) -> str:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmembers()[0]
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def test_a_rental_container_is_confined_with_caps_no_new_privileges_limits_and_its_own_network(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    platform.send(
        "start_instance",
        start_command(
            rental_id,
            env_vars={"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1", "OK": "1"},
            resource_limits={
                "gpu_indices": [],
                "cpu_cores": 0.5,
                "ram_limit": "96m",
                "pids_limit": 128,
            },
            proxy_port_mapping={"8080": 21001},
        ),
    )
    started = platform.wait_for("instance_started", rental_id=rental_id)
    container = engine.containers.get(started["data"]["container_id"])
    host = container.attrs["HostConfig"]
    assert {"NET_RAW", "MKNOD", "SETFCAP"} <= set(host["CapDrop"] or [])  # Podman lists what went
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 128
    assert host["Memory"] == 96 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [f"dc-{rental_id}"]
    binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    env = container.attrs["Config"]["Env"]
    assert "OK=1" in env and "NVIDIA_VISIBLE_DEVICES=void" in env
    assert not any(v.startswith("CUDA_VISIBLE_DEVICES=") for v in env)
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    effective = int(
        next(line for line in status.splitlines() if line.startswith("CapEff")).split()[1], 16
    )
    assert effective == sum(1 << CAP_BITS[name] for name in CAP_ADD)
    assert "NoNewPrivs:\t1" in status
    if shutil.which("podman"):  # the compat API does not echo the log options back; podman does
        shown = subprocess.run(
            ["podman", "--url", os.environ["DOCKER_HOST"], "inspect", container.id],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(shown.stdout)[0]["HostConfig"]["LogConfig"]["Size"] == "50MB"

    platform.send("stop_instance", {"rental_id": rental_id, "grace_seconds": 0})
    platform.wait_for("instance_stopped", rental_id=rental_id)
    assert engine.networks.list(names=[f"dc-{rental_id}"]) == []


def test_ssh_keys_are_appended_to_what_the_image_has_in_authorized_keys(
    platform, agent, engine, node_id
):
    # An image that already has a key of its own, made from busybox with put_archive.
    builder = engine.containers.create(IMAGE, ["true"])
    body = (IMAGE_KEY + "\n").encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("root/.ssh/authorized_keys")
        info.size, info.mode = len(body), 0o644
        tar.addfile(info, io.BytesIO(body))
    builder.put_archive("/", archive.getvalue())
    tag = f"dc-test-keys-{uuid.uuid4().hex[:8]}"
    builder.commit(repository=f"localhost/{tag}", tag="1")
    builder.remove(force=True)
    try:
        rental_id = _rental()
        platform.send(
            "start_instance", start_command(rental_id, image=f"localhost/{tag}:1", ssh_keys=[KEY])
        )
        started = platform.wait_for("instance_started", rental_id=rental_id)
        container = engine.containers.get(started["data"]["container_id"])
        assert _file(container, "/root/.ssh/authorized_keys").splitlines() == [IMAGE_KEY, KEY]
        listing = container.exec_run(["ls", "-ld", "/root/.ssh", "/root/.ssh/authorized_keys"])
        modes = [line.split()[0] for line in listing.output.decode().splitlines()]
        assert modes == ["drwx------", "-rw-------"]
        # A repeated start neither adds the key twice nor starts anything new.
        platform.send(
            "start_instance", start_command(rental_id, image=f"localhost/{tag}:1", ssh_keys=[KEY])
        )
        wait_until(lambda: len(platform.frames("instance_started")) == 2, 20, what="second answer")
        assert _file(container, "/root/.ssh/authorized_keys").count(KEY) == 1
    finally:
        for container in node_containers(engine, node_id):
            container.remove(force=True)
        engine.images.remove(f"localhost/{tag}:1", force=True)


def test_a_key_goes_into_an_image_without_ssh_folder_and_entrypoint_and_onstart_run(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    platform.send(
        "start_instance",
        start_command(
            rental_id,
            entrypoint=["/bin/sh", "-c"],
            command=["echo from-the-entrypoint; sleep 300"],
            onstart="echo onstart says $((6*7)); echo onstart-err >&2",
            ssh_keys=[KEY],
        ),
    )
    started = platform.wait_for("instance_started", rental_id=rental_id)
    container = engine.containers.get(started["data"]["container_id"])
    assert container.attrs["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert _file(container, "/root/.ssh/authorized_keys") == KEY + "\n"

    def logs() -> list[str]:
        request = str(uuid.uuid4())
        platform.send("fetch_logs", {"request_id": request, "rental_id": rental_id, "tail": 100})
        return platform.wait_for("logs", request_id=request)["data"]["lines"]

    wait_until(lambda: "onstart says 42" in logs(), 20, what="onstart output in the logs")
    lines = logs()
    assert "from-the-entrypoint" in lines and "onstart-err" in lines


def test_fetch_logs_answers_in_chunks_under_the_frame_limit_and_a_stop_sends_the_last_64_kib(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    # About 300 KiB of output, some of it characters that JSON escapes.
    script = "i=0; while [ $i -lt 3000 ]; do echo \"line $i $(printf 'x%.0s' $(seq 1 90))\"; i=$((i+1)); done; sleep 300"
    platform.send("start_instance", start_command(rental_id, command=["sh", "-c", script]))
    platform.wait_for("instance_started", rental_id=rental_id)
    wait_until(
        lambda: (
            "line 2999" in engine.containers.get(f"dc-rental-{rental_id}").logs(tail=1).decode()
        ),
        30,
        what="the output written",
    )
    mark = platform.mark()
    command_id = platform.send(
        "fetch_logs",
        {"request_id": "req-1", "rental_id": rental_id, "tail": 5000, "max_bytes": 65536},
    )
    platform.wait_for("ack", id=command_id)
    sized = platform.sized("logs", after=mark)
    frames, sizes = [f for f, _ in sized], [size for _, size in sized]
    assert frames and frames[-1]["data"]["last"] and max(sizes) < MAX_FRAME_BYTES
    assert [f["data"]["seq"] for f in frames] == list(range(len(frames)))
    lines = [line for f in frames for line in f["data"]["lines"]]
    assert frames[0]["data"]["truncated"] is True
    assert lines[-1].startswith("line 2999") and 0 < sum(len(x) + 1 for x in lines) <= 65536

    mark = platform.mark()
    platform.send("stop_instance", {"rental_id": rental_id, "grace_seconds": 0})
    platform.wait_for("instance_stopped", after=mark, rental_id=rental_id)
    after = [f for f in platform.frames()[mark:] if f["event"] in ("logs", "instance_stopped")]
    final = [f["data"] for f in after if f["event"] == "logs"]
    assert after[-1]["event"] == "instance_stopped"  # the last output comes first
    assert final and {d["request_id"] for d in final} == {"final"} and final[-1]["last"]
    assert [line for d in final for line in d["lines"]][-1].startswith("line 2999")
    assert node_containers(engine, node_id) == []


def test_start_failures_carry_the_contracts_failure_codes(platform, agent, engine, node_id):
    cases = {
        "image_not_found": {"image": "localhost/no-such-image:1.0"},
        "invalid_request": {"image": "10.1.2.3:5000/team/model:1"},
        "insufficient_resources": {"resource_limits": {"gpu_indices": ["0"]}},
    }
    for code, override in cases.items():
        rental_id = _rental()
        command_id = platform.send("start_instance", start_command(rental_id, **override))
        failed = platform.wait_for("instance_failed", rental_id=rental_id)
        platform.wait_for("ack", id=command_id)
        assert failed["data"]["failure_code"] == code, failed
    assert node_containers(engine, node_id) == []
    assert not [
        n for n in engine.networks.list() if n.name.startswith("dc-") and node_id in str(n.attrs)
    ]


def test_a_pull_reports_progress_and_the_registry_password_is_never_logged(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    secret = f"pw-{uuid.uuid4().hex}"
    platform.send(
        "start_instance",
        start_command(
            rental_id,
            image="docker.io/library/dc-no-such-image:1",  # no registry is reachable here
            registry_auth={"username": "renter", "password": secret},
        ),
    )
    failed = platform.wait_for("instance_failed", rental_id=rental_id, timeout=90)
    progress = platform.wait_for("instance_progress", rental_id=rental_id)
    assert progress["data"] == {"rental_id": rental_id, "phase": "pulling", "progress": None}
    assert failed["data"]["failure_code"] in ("image_pull_failed", "image_not_found")
    assert secret not in agent.log() and secret not in json.dumps(platform.frames())


def test_an_oversized_command_is_acknowledged_and_refused(platform, agent, engine, node_id):
    rental_id = _rental()
    big = start_command(rental_id, env_vars={"BLOB": "x" * (MAX_FRAME_BYTES + 1000)})
    command_id = platform.send("start_instance", big)
    platform.wait_for("ack", id=command_id)
    failed = platform.wait_for("instance_failed", rental_id=rental_id)
    assert failed["data"]["failure_code"] == "invalid_request"
    assert "over 64 KiB" in failed["data"]["reason"]
    platform.wait_for("error", id=command_id, code="frame_too_large")
    other = platform.send(
        "fetch_logs", {"request_id": "x" * 10, "rental_id": rental_id, "pad": "y" * MAX_FRAME_BYTES}
    )
    platform.wait_for("ack", id=other)
    platform.wait_for("error", id=other, code="frame_too_large")
    assert node_containers(engine, node_id) == [] and agent.alive()


def test_an_expired_start_is_refused_with_start_timeout_and_starts_nothing(
    platform, agent, engine, node_id
):
    rental_id = _rental()
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    command_id = platform.send("start_instance", start_command(rental_id, expires_at=past))
    failed = platform.wait_for("instance_failed", rental_id=rental_id)
    platform.wait_for("ack", id=command_id)
    assert failed["data"]["failure_code"] == "start_timeout"
    assert node_containers(engine, node_id) == []
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    fresh = _rental()
    platform.send("start_instance", start_command(fresh, expires_at=later))
    started = platform.wait_for("instance_started", rental_id=fresh)
    starting = platform.wait_for("instance_progress", rental_id=fresh)
    assert starting["data"]["phase"] == "starting"
    assert platform.frames().index(starting) < platform.frames().index(started)


def test_hello_after_a_reconnect_reports_every_rental_on_the_node(platform, agent, engine, node_id):
    rentals = [_rental() for _ in range(3)]
    for rental_id in rentals:
        platform.send("start_instance", start_command(rental_id))
    ids = {
        r: platform.wait_for("instance_started", rental_id=r)["data"]["container_id"]
        for r in rentals
    }
    mark = platform.mark()
    platform.drop()
    platform.wait_connected(count=2)
    hello = platform.wait_for("hello", after=mark)
    reported = {c["rental_id"]: c["container_id"] for c in hello["data"]["containers"]}
    assert reported == ids
    assert {c["state"] for c in hello["data"]["containers"]} == {"running"}


def test_ssh_with_the_renters_key_works_under_the_reduced_capabilities(
    platform, agent, engine, node_id, tmp_path
):
    # make test installs the ssh client and builds the image: a missing one is a failure.
    assert shutil.which("ssh"), "the ssh client is missing (make test installs openssh-client)"
    engine.images.get("localhost/dc-ssh:latest")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    rental_id = _rental()
    platform.send(
        "start_instance",
        start_command(
            rental_id,
            image="localhost/dc-ssh:latest",
            command=None,
            ssh_keys=[(tmp_path / "id_ed25519.pub").read_text().strip()],
            proxy_port_mapping={"22": 21022},
            resource_limits={"gpu_indices": [], "cpu_cores": 1, "ram_limit": "256m"},
        ),
    )
    started = platform.wait_for("instance_started", rental_id=rental_id, timeout=60)
    container = engine.containers.get(started["data"]["container_id"])
    port = container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"]
    argv = [
        "ssh",
        "-p",
        port,
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=5",
        "root@127.0.0.1",
        "echo in-the-rental",
    ]

    def ssh_works() -> bool:
        return (
            subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
            == "in-the-rental"
        )

    wait_until(ssh_works, 40, what="ssh into the rental")
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode == 0


def test_a_platform_that_predates_the_new_events_never_receives_them(start_agent, engine, node_id):
    old = PlatformStandIn(api_key=TEST_KEY, node_id=node_id, features=()).start()
    try:
        start_agent(old.url)
        old.wait_connected()
        rental_id = _rental()
        old.send("start_instance", start_command(rental_id, onstart="echo hi"))
        old.wait_for("instance_started", rental_id=rental_id)
        old.send("stop_instance", {"rental_id": rental_id, "grace_seconds": 0})
        old.wait_for("instance_stopped", rental_id=rental_id)
        failed_id = _rental()
        old.send("start_instance", start_command(failed_id, image="localhost/no-such:1"))
        failed = old.wait_for("instance_failed", rental_id=failed_id)
        assert {f["event"] for f in old.frames()} <= {
            "hello",
            "heartbeat",
            "ack",
            "instance_started",
            "instance_stopped",
            "instance_failed",
        }
        assert failed["data"]["failure_code"] == "image_not_found"  # an extra field is ignored
    finally:
        old.stop()
