"""Rental containers through the Docker SDK (Docker, or Podman's Docker-compatible API).

Everything the agent must know about a rental after a restart is written on the container itself
as labels, so the container engine is the agent's only state and the agent keeps none of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest

from agent.hardware import Gpu, Hardware
from agent.protocol import ram_limit_bytes

log = logging.getLogger("agent.containers")

LABEL_MANAGED = "dc.managed"
LABEL_NODE = "dc.node_id"
LABEL_RENTAL = "dc.rental_id"
LABEL_PORTS = "dc.ports"  # JSON {"<container port>": <public port>}
ENDED_STATES = ("exited", "dead")


class StartFailed(Exception):
    """The instance cannot start; the message is the reason shown to the renter."""


class EngineUnavailable(Exception):
    """The container engine does not answer."""


@dataclass(frozen=True)
class ManagedContainer:
    rental_id: str
    container_id: str
    state: str
    exit_code: int | None
    public_ports: dict[int, int] = field(default_factory=dict)  # container port -> public port
    host_ports: dict[int, int] = field(default_factory=dict)  # container port -> host port

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


def container_name(rental_id: str) -> str:
    return f"dc-rental-{rental_id}"


def _describe(container: Any) -> ManagedContainer:
    attrs = container.attrs or {}
    labels = (attrs.get("Config") or {}).get("Labels") or container.labels or {}
    state = attrs.get("State") or {}
    status = state.get("Status") if isinstance(state, dict) else None
    exit_code = state.get("ExitCode") if isinstance(state, dict) else None
    try:
        public = {int(k): int(v) for k, v in json.loads(labels.get(LABEL_PORTS) or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        public = {}
    host: dict[int, int] = {}
    for key, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if (
            proto == "tcp"
            and bindings
            and port.isdigit()
            and str(bindings[0].get("HostPort", "")).isdigit()
        ):
            host[int(port)] = int(bindings[0]["HostPort"])
    return ManagedContainer(
        rental_id=labels.get(LABEL_RENTAL, ""),
        container_id=container.id,
        state=status or container.status,
        exit_code=exit_code if isinstance(exit_code, int) and status in ENDED_STATES else None,
        public_ports=public,
        host_ports=host,
    )


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


def start_failure_reason(message: str, command: list[str] | None) -> str:
    """A reason a renter can act on, from the engine's error text."""
    lower = message.lower()
    if "executable file not found" in lower or ("no such file or directory" in lower and command):
        return (
            f"The command {command[0] if command else ''!r} was not found in the image; "
            "check the command or the image's PATH."
        )
    if "permission denied" in lower and command:
        return f"The command {command[0]!r} is not executable in the image."
    if "memory" in lower and ("limit" in lower or "oom" in lower):
        return (
            "Out of memory: the container cannot start within its memory limit; ask for more RAM."
        )
    if "nvidia" in lower or "gpu" in lower or "device" in lower:
        return f"The GPU could not be attached to the container: {message}"
    return f"The container engine refused to start the container: {message}"


def gpu_device_ids(indices: list[str], gpus: list[Gpu]) -> list[str]:
    """The GPU UUIDs for the platform's GPU indices; StartFailed names a GPU that is not here."""
    by_index = {gpu.index: gpu for gpu in gpus}
    ids = []
    for raw in indices:
        gpu = by_index.get(int(raw))
        if gpu is None:
            have = ", ".join(str(i) for i in sorted(by_index)) or "none"
            raise StartFailed(f"GPU {int(raw)} is not present on this node (GPUs here: {have}).")
        ids.append(gpu.uuid)
    return ids


class Engine:
    """The agent's view of the container engine, limited to its own node's containers."""

    def __init__(self, docker_host: str | None, *, publish_ip: str, hardware: Hardware):
        self.publish_ip = publish_ip
        self.hardware = hardware
        self._docker_host = docker_host
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                if self._docker_host:
                    self._client = docker.DockerClient(base_url=self._docker_host, timeout=60)
                else:
                    self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise EngineUnavailable(f"the container engine is not reachable: {exc}") from None
        return self._client

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (docker.errors.DockerException, EngineUnavailable, OSError):
            return False

    # ------------------------------------------------------------ queries
    def managed(self, node_id: str) -> list[ManagedContainer]:
        """Every container this node runs for rentals, ended ones included."""
        try:
            found = self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        return [_describe(c) for c in found if (c.labels or {}).get(LABEL_RENTAL)]

    def _containers(self, node_id: str, rental_id: str) -> list[Any]:
        try:
            return self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"{LABEL_MANAGED}=true",
                        f"{LABEL_NODE}={node_id}",
                        f"{LABEL_RENTAL}={rental_id}",
                    ]
                },
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None

    def find(self, node_id: str, rental_id: str) -> ManagedContainer | None:
        found = self._containers(node_id, rental_id)
        return _describe(found[0]) if found else None

    # ------------------------------------------------------------ start
    def start(self, node_id: str, command: dict[str, Any]) -> tuple[ManagedContainer, bool]:
        """Run the rental's container; (container, created). An existing one is returned as is."""
        rental_id = command["rental_id"]
        for existing in self._containers(node_id, rental_id):
            if existing.status == "created":  # left over by a start that was cut short
                self._remove(existing)
                continue
            return _describe(existing), False

        kwargs = self._run_arguments(node_id, command)
        self._ensure_image(command["image"])
        try:
            container = self.client.containers.create(command["image"], **kwargs)
        except docker.errors.APIError as exc:
            text = _explain(exc)
            if exc.status_code == 409 or "already in use" in text:
                # Another start of the same rental won the race: answer with its container.
                again = self.find(node_id, rental_id)
                if again is not None:
                    return again, False
            raise StartFailed(f"The container could not be created: {text}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        try:
            container.start()
            container.reload()
        except docker.errors.APIError as exc:
            self._remove(container)
            raise StartFailed(start_failure_reason(_explain(exc), command.get("command"))) from None
        except BaseException:
            self._remove(container)  # never leave a half-started container behind
            raise
        return _describe(container), True

    def _run_arguments(self, node_id: str, command: dict[str, Any]) -> dict[str, Any]:
        limits = command.get("resource_limits") or {}
        mapping = {int(k): int(v) for k, v in (command.get("proxy_port_mapping") or {}).items()}
        kwargs: dict[str, Any] = {
            "name": container_name(command["rental_id"]),
            "detach": True,
            "labels": {
                LABEL_MANAGED: "true",
                LABEL_NODE: node_id,
                LABEL_RENTAL: command["rental_id"],
                LABEL_PORTS: json.dumps({str(k): v for k, v in sorted(mapping.items())}),
            },
            "environment": dict(command.get("env_vars") or {}),
            "ports": {f"{port}/tcp": (self.publish_ip, None) for port in sorted(mapping)},
        }
        if command.get("command"):
            kwargs["command"] = list(command["command"])
        if limits.get("ram_limit"):
            try:
                wanted = ram_limit_bytes(limits["ram_limit"])
            except ValueError:
                raise StartFailed(
                    f"The memory limit {limits['ram_limit']!r} is not valid; use e.g. 16g."
                ) from None
            total = self.hardware.total_ram_bytes()
            if wanted > total:
                raise StartFailed(
                    f"Out of memory: the rental asks for {wanted / 2**30:.1f} GiB of "
                    f"RAM; this node has {total / 2**30:.1f} GiB."
                )
            kwargs["mem_limit"] = wanted
        if limits.get("cpu_cores"):
            cores = float(limits["cpu_cores"])
            have = self.hardware.cpu_count()
            if cores > have:
                raise StartFailed(f"The rental asks for {cores:g} CPU cores; this node has {have}.")
            kwargs["nano_cpus"] = int(cores * 1e9)
        indices = list(limits.get("gpu_indices") or [])
        if indices:
            device_ids = gpu_device_ids(indices, self.hardware.gpus())
            kwargs["device_requests"] = [
                DeviceRequest(device_ids=device_ids, capabilities=[["gpu"]])
            ]
        return kwargs

    def _ensure_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        log.info("pulling image %s", image)
        try:
            self.client.images.pull(image)
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise StartFailed(
                f"No such image: {image!r} was not found in its registry (check "
                "the name and tag; private images are not supported)."
            ) from None
        except docker.errors.APIError as exc:
            raise StartFailed(f"The image {image!r} could not be pulled: {_explain(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None

    # ------------------------------------------------------------ stop
    def stop(self, node_id: str, rental_id: str, *, grace: int) -> list[ManagedContainer]:
        """Stop and remove the rental's containers; what they were, with exit codes."""
        stopped = []
        for container in self._containers(node_id, rental_id):
            try:
                if container.status not in ENDED_STATES and container.status != "created":
                    container.stop(timeout=grace)
                container.reload()
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                log.warning(
                    "stopping %s: %s; removing it by force", container.id[:12], _explain(exc)
                )
            stopped.append(_describe(container))
            self._remove(container)
        return stopped

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._remove(self.client.containers.get(container_id))

    def _remove(self, container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "no such container" not in _explain(exc).lower():
                raise
