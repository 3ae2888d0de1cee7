"""The locally built images run in the real engine: ssh into dc-ssh with the real client."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid

import docker
import pytest

from tests.images.fixtures import ssh_argv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
    yield client
    client.close()


@pytest.fixture
def run_container(engine):
    started = []

    def _run(image: str, **kwargs):
        container = engine.containers.run(
            image, detach=True, name=f"dc-test-image-{uuid.uuid4().hex[:10]}", **kwargs
        )
        started.append(container)
        return container

    yield _run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _published_port(container, port: str = "22/tcp") -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        container.reload()
        bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(port)
        if bindings and bindings[0].get("HostPort"):
            return int(bindings[0]["HostPort"])
        time.sleep(0.1)
    raise AssertionError(f"{port} was not published: {container.attrs['NetworkSettings']}")


def _ssh_until_it_answers(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """sshd needs a moment to make its host keys; retry until it answers or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def _add_authorized_key(container, public_key: str) -> None:
    # Appended, never overwritten: keys the image put there stay.
    exit_code, output = container.exec_run(
        [
            "sh",
            "-c",
            'printf "%s\\n" "$1" >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys',
            "sh",
            public_key,
        ]
    )
    assert exit_code == 0, output


def test_ssh_with_a_fresh_key_runs_a_command_in_the_ssh_image(
    ssh_image, ssh_keypair, run_container
):
    container = run_container(ssh_image, ports={"22/tcp": ("127.0.0.1", None)})
    _add_authorized_key(container, ssh_keypair.public_key)
    port = _published_port(container)

    result = _ssh_until_it_answers(ssh_argv(port, ssh_keypair.private_key, "hostname"))

    assert result.returncode == 0, result.stderr
    exit_code, hostname = container.exec_run(["hostname"])
    assert exit_code == 0
    assert result.stdout.strip() == hostname.decode().strip()


def test_the_ssh_image_refuses_passwords_and_unknown_keys(
    ssh_image, ssh_keypair, run_container, tmp_path
):
    container = run_container(ssh_image, ports={"22/tcp": ("127.0.0.1", None)})
    _add_authorized_key(container, ssh_keypair.public_key)
    port = _published_port(container)
    assert _ssh_until_it_answers(ssh_argv(port, ssh_keypair.private_key, "true")).returncode == 0

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refused = subprocess.run(
        ssh_argv(port, stranger, "true"), capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 255
    # The server offers public keys only: no password, no keyboard-interactive.
    assert "Permission denied (publickey)" in refused.stderr


def test_every_ssh_container_makes_its_own_host_keys(ssh_image, run_container):
    first, second = run_container(ssh_image), run_container(ssh_image)

    def host_key(container) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, out = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
            if code == 0 and out.strip():
                return out.decode().split()[1]
            time.sleep(0.2)
        raise AssertionError("no host key was made")

    assert host_key(first) != host_key(second)


def test_the_bench_image_has_python_and_numpy(bench_image, engine):
    output = engine.containers.run(
        bench_image,
        ["python3", "-c", "import numpy; print(int(numpy.arange(10).sum()))"],
        remove=True,
    )
    assert output.decode().strip() == "45"
