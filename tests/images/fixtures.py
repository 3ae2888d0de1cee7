"""Fixtures for the local test images that scripts/images.sh builds from Debian packages.

`ssh_image` and `bench_image` make sure the image exists and matches its recipe (the script skips
the build when it does, in well under a second) and return its reference. Where the image cannot be
built (no mmdebstrap, no engine) the test fails with the script's reason: `make test` installs
what the build needs. `ssh_keypair` and `ssh_argv` give a client side for an image's sshd.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SSH_IMAGE = "localhost/dc-ssh:latest"
BENCH_IMAGE = "localhost/dc-bench:latest"


def ensure_image(name: str) -> str:
    """Build localhost/<name>:latest if it is missing or out of date; return its reference."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        reason = f"cannot build localhost/{name}: {(result.stderr or result.stdout).strip()[-600:]}"
        pytest.fail(reason + " (make test builds the images: make images)")
    return f"localhost/{name}:latest"


@pytest.fixture(scope="session")
def ssh_image() -> str:
    """Debian bookworm running sshd: root by key only, host keys made per container."""
    return ensure_image("dc-ssh")


@pytest.fixture(scope="session")
def bench_image() -> str:
    """Debian bookworm with python3 and numpy."""
    return ensure_image("dc-bench")


@dataclass(frozen=True)
class SSHKeyPair:
    private_key: Path
    public_key: str  # one authorized_keys line


@pytest.fixture
def ssh_keypair(tmp_path: Path) -> SSHKeyPair:
    """A fresh ed25519 key pair without a passphrase."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dc-test", "-f", str(key)],
        check=True,
        timeout=30,
    )
    return SSHKeyPair(private_key=key, public_key=key.with_suffix(".pub").read_text().strip())


def ssh_argv(port: int, key: Path, *command: str, host: str = "127.0.0.1") -> list[str]:
    """The real OpenSSH client, non-interactive, trusting the container's fresh host key."""
    return [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        f"root@{host}",
        *command,
    ]
