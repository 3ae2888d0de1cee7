"""Value formats shared by the wire schemas and the agent: image references, sizes, SSH keys.

Kept apart from the schemas so that the agent's engine code and the platform's validation read one
definition of each format.
"""

from __future__ import annotations

import ipaddress
import re

# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], as docker parses it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_REFERENCE = re.compile(
    rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)
RAM_LIMIT = re.compile(r"^[1-9][0-9]{0,12}[kmgKMG]?$")
_RAM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# One OpenSSH public key line: type, base64 blob, optional comment (no options, no newlines).
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
SSH_PUBLIC_KEY = re.compile(
    r"^(?:"
    + "|".join(re.escape(t) for t in SSH_KEY_TYPES)
    + r") [A-Za-z0-9+/]+={0,3}(?: [\x20-\x7e]{1,256})?$"
)
DOCKER_HUB = "docker.io"


def valid_image(reference: str) -> bool:
    return len(reference) <= 255 and IMAGE_REFERENCE.match(reference) is not None


def ram_limit_bytes(limit: str) -> int:
    """'16g' -> bytes. Raises ValueError for anything else."""
    if not RAM_LIMIT.match(limit):
        raise ValueError(f"invalid ram_limit {limit!r}")
    unit = limit[-1].lower() if limit[-1].isalpha() else ""
    number = int(limit[:-1] if unit else limit)
    return number * _RAM_UNITS[unit]


def registry_host(reference: str) -> str:
    """The registry an image is pulled from, as docker decides it ('docker.io' when none is named)."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def host_without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:5000
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_private_address(text: str) -> bool:
    """True for loopback, private, link-local, shared (CGNAT) and unspecified addresses."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address in ipaddress.ip_network("100.64.0.0/10")
    )


def split_image(reference: str) -> tuple[str, str | None]:
    """('repo', 'tag' or 'sha256:...' or None) as the engine's pull API takes them."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        return repository, digest
    head, sep, tail = reference.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return reference, "latest"
