"""What the agent does inside a rental's container: SSH keys before it starts, onstart after.

Both go through the engine's API (archives and exec), so they work on any image without an agent
or tools of ours inside it.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
from typing import Any

import docker.errors

from agent.failures import StartFailed

log = logging.getLogger("agent.inside")

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
_MAX_EXISTING = 1024 * 1024  # an image's own authorized_keys larger than this is not kept whole
# The script is $1 of a fixed shell line: it is never spliced into a command string. Its output
# goes to PID 1's stdout and stderr, which is where the engine reads the container's logs from.
# Right after the start PID 1 may be an image's start-up script whose stdout is briefly /dev/null
# (`ssh-keygen -A >/dev/null` before `exec sshd`, seen with dash; generating host keys takes
# seconds on a loaded machine): wait up to 30 s for the real one.
ONSTART_SHELL = (
    'n=0; while [ "$(readlink /proc/1/fd/1 2>/dev/null)" = /dev/null ] && [ $n -lt 300 ]; do '
    "sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done; "
    'exec >/proc/1/fd/1 2>/proc/1/fd/2; exec /bin/sh -c "$1"'
)


def _existing_keys(container: Any) -> bytes:
    try:
        stream, _ = container.get_archive(AUTHORIZED_KEYS)
    except docker.errors.NotFound:
        return b""
    except docker.errors.APIError as exc:
        if "no such file" in str(exc).lower():
            return b""
        raise
    archive = io.BytesIO()
    for chunk in stream:
        archive.write(chunk)
        if archive.tell() > _MAX_EXISTING + 65536:
            break
    archive.seek(0)
    try:
        with tarfile.open(fileobj=archive) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            handle = tar.extractfile(member) if member is not None else None
            return handle.read(_MAX_EXISTING) if handle is not None else b""
    except tarfile.TarError:
        return b""


def add_ssh_keys(container: Any, keys: list[str]) -> None:
    """Append `keys` to root's authorized_keys, keeping what the image has there."""
    if not keys:
        return
    try:
        existing = _existing_keys(container)
        present = {line.strip() for line in existing.decode(errors="replace").splitlines()}
        added = [key.strip() for key in keys if key.strip() not in present]
        if not added:
            return
        body = existing
        if body and not body.endswith(b"\n"):
            body += b"\n"
        body += ("\n".join(added) + "\n").encode()
        archive = io.BytesIO()
        now = int(time.time())
        with tarfile.open(fileobj=archive, mode="w") as tar:
            folder = tarfile.TarInfo("root/.ssh")
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o700, now
            tar.addfile(folder)
            keyfile = tarfile.TarInfo("root/.ssh/authorized_keys")
            keyfile.size, keyfile.mode, keyfile.mtime = len(body), 0o600, now
            tar.addfile(keyfile, io.BytesIO(body))
        if not container.put_archive("/", archive.getvalue()):
            raise StartFailed(
                "invalid_request", "The SSH keys could not be written into the image."
            )
    except docker.errors.APIError as exc:
        raise StartFailed(
            "invalid_request",
            f"The SSH keys could not be added to {AUTHORIZED_KEYS}: {exc.explanation or exc}",
        ) from None


def run_onstart(container: Any, script: str) -> None:
    """Start the renter's onstart script in the background; its output lands in the logs."""
    container.reload()
    if container.status != "running":
        log.info("onstart of %s not run: the container already ended", container.id[:12])
        return
    try:
        container.exec_run(["/bin/sh", "-c", ONSTART_SHELL, "dc-onstart", script], detach=True)
    except docker.errors.APIError as exc:
        raise StartFailed(
            "invalid_request",
            f"The onstart script could not run (the image needs /bin/sh): {exc.explanation or exc}",
        ) from None
