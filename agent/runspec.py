"""The engine arguments for a rental's container: what it runs, its limits and its hardening.

Every rental container runs with the capabilities cut to CAP_ADD, no-new-privileges, a process
limit, bounded logs, the memory and CPU of its share, its own bridge network, and only the GPUs it
was given (docs/agent.md, "How rentals are confined").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from docker.types import DeviceRequest, LogConfig

from agent.failures import StartFailed
from agent.hardware import Gpu, Hardware
from agent.values import ram_limit_bytes

LABEL_MANAGED = "dc.managed"
LABEL_NODE = "dc.node_id"
LABEL_RENTAL = "dc.rental_id"
LABEL_PORTS = "dc.ports"  # JSON {"<container port>": <public port>}

# What is left after `cap_drop: ALL`: enough for an image running as root to manage its own files,
# run sshd (privilege separation: SETUID, SETGID, SYS_CHROOT, AUDIT_WRITE, CHOWN for the pty) and
# bind ports below 1024. Not kept from Docker's default set: NET_RAW (raw sockets, ARP/ICMP
# spoofing), MKNOD, SETFCAP, SETPCAP, FSETID.
CAP_ADD = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
    "KILL",
    "SYS_CHROOT",
    "AUDIT_WRITE",
)
SECURITY_OPT = ("no-new-privileges",)
LOG_MAX_SIZE = "50m"
LOG_MAX_FILES = "2"
# Variables that choose GPUs inside the container: a renter must not widen their own share.
_GPU_ENV_PREFIXES = ("NVIDIA_",)
_GPU_ENV_NAMES = frozenset(
    {"CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}
)


@dataclass(frozen=True)
class NodePolicy:
    """What the host decided for every rental on this node."""

    publish_ip: str
    pids_limit: int
    podman: bool  # Podman attaches GPUs by CDI name, Docker by the NVIDIA runtime's device ids


def container_name(rental_id: str) -> str:
    return f"dc-rental-{rental_id}"


def network_name(rental_id: str) -> str:
    return f"dc-{rental_id}"


def bridge_name(rental_id: str) -> str:
    """The host interface of the rental's network (15 characters at most, Linux's limit)."""
    return "dc-" + rental_id.replace("-", "")[:12]


def renter_env(env: dict[str, str]) -> dict[str, str]:
    """The renter's variables without those that select GPUs."""
    return {
        key: value
        for key, value in env.items()
        if not key.upper().startswith(_GPU_ENV_PREFIXES) and key.upper() not in _GPU_ENV_NAMES
    }


def assigned_gpus(limits: dict[str, Any], gpus: list[Gpu]) -> list[Gpu]:
    """The rental's GPUs, by UUID when the platform names them, else by index."""
    by_uuid = {gpu.uuid: gpu for gpu in gpus}
    by_index = {gpu.index: gpu for gpu in gpus}
    have = ", ".join(str(i) for i in sorted(by_index)) or "none"
    chosen: list[Gpu] = []
    for uuid in limits.get("gpu_uuids") or []:
        if uuid not in by_uuid:
            raise StartFailed(
                "insufficient_resources",
                f"GPU {uuid} is not present on this node (GPUs here: {have}).",
            )
        chosen.append(by_uuid[uuid])
    if not chosen:
        for raw in limits.get("gpu_indices") or []:
            gpu = by_index.get(int(raw))
            if gpu is None:
                raise StartFailed(
                    "insufficient_resources",
                    f"GPU {int(raw)} is not present on this node (GPUs here: {have}).",
                )
            chosen.append(gpu)
    return list({gpu.index: gpu for gpu in chosen}.values())


def _gpu_arguments(gpus: list[Gpu], policy: NodePolicy) -> dict[str, Any]:
    if not gpus:
        # "void": the NVIDIA runtime adds nothing, even when the image asks for all GPUs.
        return {"environment": {"NVIDIA_VISIBLE_DEVICES": "void"}}
    if policy.podman:
        # Created through libpod, which attaches these CDI names as devices (agent/libpod.py):
        # Podman's Docker-compatible API would drop the request before 5.4.
        request = DeviceRequest(
            driver="cdi", device_ids=[f"nvidia.com/gpu={gpu.index}" for gpu in gpus]
        )
    else:
        request = DeviceRequest(device_ids=[gpu.uuid for gpu in gpus], capabilities=[["gpu"]])
    return {
        "environment": {"NVIDIA_VISIBLE_DEVICES": ",".join(gpu.uuid for gpu in gpus)},
        "device_requests": [request],
    }


def _limits(limits: dict[str, Any], hardware: Hardware, policy: NodePolicy) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"pids_limit": int(limits.get("pids_limit") or policy.pids_limit)}
    if limits.get("ram_limit"):
        try:
            wanted = ram_limit_bytes(limits["ram_limit"])
        except ValueError:
            raise StartFailed(
                "invalid_request",
                f"The memory limit {limits['ram_limit']!r} is not valid; use e.g. 16g.",
            ) from None
        total = hardware.total_ram_bytes()
        if wanted > total:
            raise StartFailed(
                "insufficient_resources",
                f"Out of memory: the rental asks for {wanted / 2**30:.1f} GiB of "
                f"RAM; this node has {total / 2**30:.1f} GiB.",
            )
        kwargs["mem_limit"] = wanted
        kwargs["memswap_limit"] = wanted  # no swap beyond the share
    if limits.get("cpu_cores"):
        cores = float(limits["cpu_cores"])
        have = hardware.cpu_count()
        if cores > have:
            raise StartFailed(
                "insufficient_resources",
                f"The rental asks for {cores:g} CPU cores; this node has {have}.",
            )
        kwargs["nano_cpus"] = int(cores * 1e9)
    return kwargs


def run_arguments(
    node_id: str, command: dict[str, Any], hardware: Hardware, policy: NodePolicy
) -> dict[str, Any]:
    """Keyword arguments for `containers.create`; StartFailed when the node cannot honour them."""
    rental_id = command["rental_id"]
    limits = command.get("resource_limits") or {}
    mapping = {int(k): int(v) for k, v in (command.get("proxy_port_mapping") or {}).items()}
    gpu = _gpu_arguments(assigned_gpus(limits, hardware.gpus()), policy)
    kwargs: dict[str, Any] = {
        "name": container_name(rental_id),
        "detach": True,
        "labels": {
            LABEL_MANAGED: "true",
            LABEL_NODE: node_id,
            LABEL_RENTAL: rental_id,
            LABEL_PORTS: json.dumps({str(k): v for k, v in sorted(mapping.items())}),
        },
        "environment": {
            **renter_env(dict(command.get("env_vars") or {})),
            **gpu.pop("environment"),
        },
        "ports": {f"{port}/tcp": (policy.publish_ip, None) for port in sorted(mapping)},
        "network": network_name(rental_id),
        "cap_drop": ["ALL"],
        "cap_add": list(CAP_ADD),
        "security_opt": list(SECURITY_OPT),
        "log_config": LogConfig(
            type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}
        ),
        **gpu,
        **_limits(limits, hardware, policy),
    }
    if command.get("command"):
        kwargs["command"] = list(command["command"])
    if command.get("entrypoint"):
        kwargs["entrypoint"] = list(command["entrypoint"])
    return kwargs
