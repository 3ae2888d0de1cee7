"""Fake GPUs for tests and development: a CDI spec for the agent's DC_AGENT_FAKE_GPUS.

With DC_AGENT_FAKE_GPUS=N the agent reports N fake GPUs and gives a rental GPU i as the CDI device
`nvidia.com/gpu=<i>`, which Podman resolves through the CDI specs in /etc/cdi and /var/run/cdi
(read again at every container start). The spec written here names the devices 0..63 of kind
nvidia.com/gpu; the only thing each one does to a container is set DC_FAKE_GPU_<i>=<its UUID> in
the environment of the container's first process (not of `exec`'d ones): no device node, nothing
of the host. A container with GPUs 2 and 3 has DC_FAKE_GPU_2 and DC_FAKE_GPU_3, and no other.

The spec is shared by every test run on the machine (two specs naming the same device would make
CDI refuse both), so each user leaves a marker in USERS and the last one out removes it.

    sudo .venv/bin/python -m tests.fake_gpus install   # keep it, for an agent started by hand
    sudo .venv/bin/python -m tests.fake_gpus remove
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.config import MAX_FAKE_GPUS
from agent.hardware import fake_gpu

CDI_SPEC = Path("/var/run/cdi/dc-fake-gpu.json")
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))  # where Podman looks for specs
USERS = Path("/run/dc-fake-gpu")  # one marker per process using the spec; "manual" for `install`
CDI_KIND = "nvidia.com/gpu"
ENV_PREFIX = "DC_FAKE_GPU_"  # DC_FAKE_GPU_<index>=<uuid>: what a fake GPU sets in the container


def cdi_spec(count: int = MAX_FAKE_GPUS) -> dict[str, Any]:
    """A CDI spec with fake devices nvidia.com/gpu=0..count-1."""
    return {
        "cdiVersion": "0.5.0",
        "kind": CDI_KIND,
        "devices": [
            {
                "name": str(index),
                "containerEdits": {"env": [f"{ENV_PREFIX}{index}={fake_gpu(index).uuid}"]},
            }
            for index in range(count)
        ],
    }


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    USERS.mkdir(parents=True, exist_ok=True)
    with open(USERS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _in_use(marker: Path) -> bool:
    if marker.name == "manual":
        return True
    try:
        os.kill(int(marker.name), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _other_gpu_specs() -> list[Path]:
    """Other specs for nvidia.com/gpu (a real GPU's): CDI refuses a device two specs name."""
    found = []
    for folder in CDI_DIRS:
        for spec in sorted(folder.glob("*")) if folder.is_dir() else []:
            if spec.suffix in (".json", ".yaml", ".yml") and spec.resolve() != CDI_SPEC.resolve():
                with contextlib.suppress(OSError):
                    if CDI_KIND in spec.read_text(errors="replace"):
                        found.append(spec)
    return found


def _write_spec() -> None:
    others = _other_gpu_specs()
    if others:
        raise RuntimeError(
            f"{', '.join(map(str, others))} already name {CDI_KIND} devices: the fake GPUs would "
            "make CDI refuse them and their own; run fake-GPU tests on a machine without them"
        )
    CDI_SPEC.parent.mkdir(parents=True, exist_ok=True)
    partial = CDI_SPEC.with_name(f".{CDI_SPEC.name}.{os.getpid()}")
    partial.write_text(json.dumps(cdi_spec(), indent=1))
    os.replace(partial, CDI_SPEC)  # Podman never reads half a spec


def _users() -> list[Path]:
    return [marker for marker in USERS.iterdir() if not marker.name.startswith(".")]


def _leave(marker: str) -> None:
    with _locked():
        (USERS / marker).unlink(missing_ok=True)
        for user in _users():
            if not _in_use(user):  # a run that was killed
                user.unlink(missing_ok=True)
        if not _users():
            CDI_SPEC.unlink(missing_ok=True)


@contextlib.contextmanager
def installed_cdi_spec() -> Iterator[Path]:
    """The fake GPUs' CDI spec in place while the block runs (root only)."""
    if os.geteuid() != 0:
        raise PermissionError(f"writing {CDI_SPEC} for the fake GPUs needs root")
    marker = str(os.getpid())
    with _locked():
        _write_spec()
        (USERS / marker).touch()
    try:
        yield CDI_SPEC
    finally:
        _leave(marker)


def main(argv: list[str]) -> int:
    if argv == ["install"]:
        with _locked():
            _write_spec()
            (USERS / "manual").touch()
        print(f"wrote {CDI_SPEC}: {CDI_KIND}=<i> (0..{MAX_FAKE_GPUS - 1}) sets {ENV_PREFIX}<i>")
        return 0
    if argv == ["remove"]:
        _leave("manual")
        print(f"{CDI_SPEC} {'kept: in use by a test run' if CDI_SPEC.exists() else 'removed'}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
