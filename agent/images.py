"""Getting a rental's image onto the node: the registry policy, the pull and its progress.

Pulls use the engine's low-level streaming API so that progress can be reported; registry
credentials are passed to that one call and never logged or kept.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from agent.failures import EngineUnavailable, StartFailed
from agent.values import (
    DOCKER_HUB,
    host_without_port,
    is_private_address,
    registry_host,
    split_image,
)

log = logging.getLogger("agent.images")

Progress = Callable[[float | None], None]

_NOT_FOUND = ("manifest unknown", "not found", "name unknown", "does not exist", "404")
_AUTH = ("unauthorized", "authentication required", "401", "403", "denied", "incorrect username")
# Names that only ever mean this machine (Podman's local namespace is `localhost/`).
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def classify_pull_error(message: str, *, had_auth: bool) -> tuple[str, str]:
    """(failure_code, reason) from a registry's or engine's pull error text."""
    lower = message.lower()
    if "does not exist or may require" in lower:
        # Docker Hub says this for a missing repository and for a private one alike.
        if had_auth:
            return "registry_auth_failed", f"The registry refused the credentials: {message}"
        return "image_not_found", f"No such image, or it is private (give registry_auth): {message}"
    if any(word in lower for word in _AUTH):
        return "registry_auth_failed", f"The registry refused access to the image: {message}"
    if any(word in lower for word in _NOT_FOUND):
        return "image_not_found", f"No such image in its registry: {message}"
    return "image_pull_failed", f"The image could not be pulled: {message}"


def registry_is_private(image: str) -> bool:
    """True when the image's registry is this machine, a private range or link-local."""
    host = host_without_port(registry_host(image))
    if host == DOCKER_HUB:
        return False
    if host.lower() in _LOCAL_NAMES or is_private_address(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False  # the pull fails on its own and says why
    return any(is_private_address(str(info[4][0])) for info in infos)


class PullProgress:
    """Fraction of bytes downloaded over the layers the engine has announced, never going back."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[int, int]] = {}
        self.value: float | None = None

    def update(self, event: dict[str, Any]) -> float | None:
        layer = event.get("id")
        detail = event.get("progressDetail") or {}
        status = str(event.get("status") or "").lower()
        if not isinstance(layer, str):
            return self.value
        total = detail.get("total") if isinstance(detail, dict) else None
        current = detail.get("current") if isinstance(detail, dict) else None
        if isinstance(total, int) and total > 0 and "download" in status:
            self._layers[layer] = (min(int(current or 0), total), total)
        elif status in ("download complete", "pull complete", "already exists"):
            known = self._layers.get(layer)
            if known is not None:
                self._layers[layer] = (known[1], known[1])
        totals = sum(t for _, t in self._layers.values())
        if totals:
            fraction = sum(c for c, _ in self._layers.values()) / totals
            self.value = max(self.value or 0.0, min(1.0, fraction))
        return self.value


def ensure_image(
    client: docker.DockerClient,
    image: str,
    *,
    auth: dict[str, str] | None,
    allow_private: bool,
    progress: Progress,
) -> None:
    """The image, present locally or pulled now; StartFailed says why it cannot be had."""
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
    host = registry_host(image)
    if host_without_port(host).lower() in _LOCAL_NAMES and ":" not in host:
        # `localhost/...` names the engine's own images; there is no registry to pull from.
        raise StartFailed("image_not_found", f"No such image: {image!r} is not on this node.")
    if not allow_private and registry_is_private(image):
        raise StartFailed(
            "invalid_request",
            f"The image's registry {host!r} is on a private or local network; "
            "this node only pulls from public registries.",
        )
    log.info("pulling image %s", image)
    progress(None)
    tracker = PullProgress()
    repository, tag = split_image(image)
    try:
        for event in client.api.pull(
            repository, tag=tag, stream=True, decode=True, auth_config=auth or None
        ):
            if not isinstance(event, dict):
                continue
            error = event.get("error") or (event.get("errorDetail") or {}).get("message")
            if error:
                raise StartFailed(*classify_pull_error(str(error), had_auth=bool(auth)))
            before = tracker.value
            if tracker.update(event) != before:
                progress(tracker.value)
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise StartFailed(
            "image_not_found", f"No such image: {image!r} was not found in its registry."
        ) from None
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc).strip()
        if exc.status_code in (401, 403):
            raise StartFailed(
                "registry_auth_failed", f"The registry refused access: {text}"
            ) from None
        if exc.status_code == 404:
            raise StartFailed("image_not_found", f"No such image: {text}") from None
        raise StartFailed(*classify_pull_error(text, had_auth=bool(auth))) from None
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnavailable(f"the container engine did not answer: {exc}") from None
