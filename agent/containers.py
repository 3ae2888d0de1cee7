"""Rental containers through the Docker SDK (Docker, or Podman's Docker-compatible API; on Podman
containers are created through its own API, which attaches CDI devices: agent/libpod.py).

Everything the agent must know about a rental after a restart is written on the container itself
as labels, so the container engine is the agent's only state and the agent keeps none of its own.
Each rental also gets its own bridge network, removed with its container.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from agent import libpod
from agent.failures import EngineUnavailable, StartFailed
from agent.hardware import Hardware
from agent.images import Progress, ensure_image
from agent.inside import add_ssh_keys, run_onstart
from agent.logs import read_logs
from agent.runspec import (
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PORTS,
    LABEL_RENTAL,
    NodePolicy,
    bridge_name,
    network_name,
    run_arguments,
)

log = logging.getLogger("agent.containers")

ENDED_STATES = ("exited", "dead")


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


def start_failure(message: str, command: list[str] | None) -> StartFailed:
    """A reason a renter can act on, from the engine's error text."""
    lower = message.lower()
    if "executable file not found" in lower or ("no such file or directory" in lower and command):
        return StartFailed(
            "invalid_request",
            f"The command {command[0] if command else ''!r} was not found in the image; "
            "check the command or the image's PATH.",
        )
    if "permission denied" in lower and command:
        return StartFailed(
            "invalid_request", f"The command {command[0]!r} is not executable in the image."
        )
    if "memory" in lower and ("limit" in lower or "oom" in lower):
        return StartFailed(
            "insufficient_resources",
            "Out of memory: the container cannot start within its memory limit; ask for more RAM.",
        )
    if "nvidia" in lower or "gpu" in lower or "device" in lower:
        return StartFailed(
            "insufficient_resources", f"The GPU could not be attached to the container: {message}"
        )
    return StartFailed(
        "invalid_request", f"The container engine refused to start the container: {message}"
    )


class Engine:
    """The agent's view of the container engine, limited to its own node's containers."""

    def __init__(
        self,
        docker_host: str | None,
        *,
        publish_ip: str,
        hardware: Hardware,
        pids_limit: int = 4096,
        allow_private_registries: bool = False,
    ):
        self.publish_ip = publish_ip
        self.hardware = hardware
        self.pids_limit = pids_limit
        self.allow_private_registries = allow_private_registries
        self._docker_host = docker_host
        self._client: docker.DockerClient | None = None
        self._podman: bool | None = None
        self._libpod_version = libpod.FALLBACK_VERSION

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

    def policy(self) -> NodePolicy:
        if self._podman is None:
            try:
                components = self.client.version().get("Components") or []
                podman = any("podman" in str(c.get("Name", "")).lower() for c in components)
            except (docker.errors.DockerException, OSError) as exc:
                raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
            if podman:
                self._libpod_version = libpod.api_version(components)
            self._podman = podman
        return NodePolicy(
            publish_ip=self.publish_ip, pids_limit=self.pids_limit, podman=self._podman
        )

    def create(self, image: str, kwargs: dict[str, Any]) -> Any:
        """Create (not start) a container from `containers.create` arguments; on Podman through
        libpod, which attaches GPUs by CDI name where the compatible API drops them."""
        if self.policy().podman:
            return libpod.create(self.client, image, kwargs, version=self._libpod_version)
        return self.client.containers.create(image, **kwargs)

    def run(self, image: str, kwargs: dict[str, Any]) -> Any:
        """`containers.run(image, **kwargs)` with `detach`: pull when missing, create, start."""
        if not self.policy().podman:
            return self.client.containers.run(image, **kwargs)
        try:
            container = self.create(image, kwargs)
        except docker.errors.ImageNotFound:
            self.client.images.pull(image)
            container = self.create(image, kwargs)
        try:
            container.start()
        except BaseException:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise
        return container

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

    def logs(
        self, node_id: str, rental_id: str, *, tail: int, max_bytes: int
    ) -> tuple[list[str], bool] | None:
        """(lines, truncated) of the rental's container, or None when there is none."""
        found = self._containers(node_id, rental_id)
        return self.logs_of(found[0].id, tail=tail, max_bytes=max_bytes) if found else None

    def logs_of(
        self, container_id: str, *, tail: int, max_bytes: int
    ) -> tuple[list[str], bool] | None:
        try:
            return read_logs(
                self.client.containers.get(container_id), tail=tail, max_bytes=max_bytes
            )
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None

    # ------------------------------------------------------------ start
    def start(
        self,
        node_id: str,
        command: dict[str, Any],
        *,
        registry_auth: dict[str, str] | None,
        progress: Progress,
        starting: Progress,
    ) -> tuple[ManagedContainer, bool]:
        """Run the rental's container; (container, created). An existing one is returned as is.

        `progress` hears about the pull, `starting` once the image is here.
        """
        rental_id = command["rental_id"]
        for existing in self._containers(node_id, rental_id):
            if existing.status == "created":  # left over by a start that was cut short
                self._remove(existing)
                continue
            return _describe(existing), False

        kwargs = run_arguments(node_id, command, self.hardware, self.policy())
        ensure_image(
            self.client,
            command["image"],
            auth=registry_auth,
            allow_private=self.allow_private_registries,
            progress=progress,
        )
        starting(None)
        self._ensure_network(node_id, rental_id)
        try:
            container = self.create(command["image"], kwargs)
        except ValueError:  # arguments libpod cannot carry: a bug here, not the renter's
            self._remove_network(rental_id)
            raise
        except docker.errors.APIError as exc:
            text = _explain(exc)
            if exc.status_code == 409 or "already in use" in text:
                # Another start of the same rental won the race: answer with its container.
                again = self.find(node_id, rental_id)
                if again is not None:
                    return again, False
            self._remove_network(rental_id)
            raise StartFailed(
                "invalid_request", f"The container could not be created: {text}"
            ) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        try:
            add_ssh_keys(container, list(command.get("ssh_keys") or []))
            container.start()
            if command.get("onstart"):
                run_onstart(container, command["onstart"])
            container.reload()
        except docker.errors.APIError as exc:
            self._discard(container, rental_id)
            raise start_failure(
                _explain(exc), command.get("entrypoint") or command.get("command")
            ) from None
        except BaseException:
            self._discard(container, rental_id)  # never leave a half-started container behind
            raise
        return _describe(container), True

    def _ensure_network(self, node_id: str, rental_id: str) -> None:
        name = network_name(rental_id)
        try:
            if self.client.networks.list(names=[name]):
                return
            self.client.networks.create(
                name,
                driver="bridge",
                options={"com.docker.network.bridge.name": bridge_name(rental_id)},
                labels={LABEL_MANAGED: "true", LABEL_NODE: node_id, LABEL_RENTAL: rental_id},
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409 or "already" in _explain(exc).lower():
                return
            raise StartFailed(
                "insufficient_resources",
                f"The rental's network could not be created: {_explain(exc)}",
            ) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None

    def rental_networks(self, node_id: str) -> list[str]:
        """The rental ids that have a network of this node's."""
        try:
            found = self.client.networks.list(
                filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
        return [n.attrs.get("Labels", {}).get(LABEL_RENTAL, "") for n in found]

    def remove_network(self, rental_id: str) -> None:
        self._remove_network(rental_id)

    def _remove_network(self, rental_id: str) -> None:
        try:
            for network in self.client.networks.list(names=[network_name(rental_id)]):
                network.remove()
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, OSError) as exc:
            log.warning("network of rental %s not removed: %s", rental_id, exc)

    # ------------------------------------------------------------ stop
    def stop(self, node_id: str, rental_id: str, *, grace: int) -> list[ManagedContainer]:
        """Stop the rental's containers (not removed: see `remove`); what they were."""
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
        return stopped

    def remove(self, rental_id: str, container_id: str) -> None:
        """Remove a rental's container and its network."""
        with contextlib.suppress(docker.errors.NotFound):
            self._remove(self.client.containers.get(container_id))
        self._remove_network(rental_id)

    def _discard(self, container: Any, rental_id: str) -> None:
        self._remove(container)
        self._remove_network(rental_id)

    def _remove(self, container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "no such container" not in _explain(exc).lower():
                raise
