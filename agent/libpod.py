"""Containers created through Podman's own API, so that CDI devices (GPUs) reach them.

Podman's Docker-compatible endpoint drops what CDI needs: before Podman 5.4 it accepts
`HostConfig.DeviceRequests` and ignores them (the container starts without its GPUs, and without
an error), and it takes `HostConfig.Devices` only as host paths ("stat nvidia.com/gpu=1: no such
file"). Its libpod endpoint takes CDI names as devices on every Podman since 4.1. So on Podman the
agent creates containers there, from the same Docker SDK arguments `agent.runspec` builds for
Docker, and uses the compatible API for everything else (start, inspect, exec, logs, stop).

Every argument is translated or refused: libpod ignores fields it does not know, so an argument
added to runspec without a translation here would silently drop a confinement on Podman.
"""

from __future__ import annotations

import re
from typing import Any

import docker
import docker.errors
from docker.utils import parse_bytes

# Asked at the engine's own libpod API version (its Podman version), which it always serves.
CREATE_PATH = "/v{version}/libpod/containers/create"
FALLBACK_VERSION = "4.1.0"  # the first with CDI devices
NO_NEW_PRIVILEGES = ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true")
CPU_PERIOD = 100_000  # microseconds; the quota is the share of it, as Docker turns nano_cpus


def _bytes(value: int | str) -> int:
    return value if isinstance(value, int) else int(parse_bytes(value))


def _decimal_size(value: str) -> int:
    """A log size as Podman reads `--log-opt max-size`: decimal units, so 50m is 50 MB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt]?)b?", value.strip().lower())
    if match is None:
        raise ValueError(f"no libpod translation for the log size {value!r}")
    return int(float(match[1]) * 1000 ** " kmgt".index(match[2] or " "))


def api_version(components: list[dict[str, Any]]) -> str:
    """The engine's libpod API version, from the `Components` of its version report."""
    for component in components:
        if "podman" in str(component.get("Name", "")).lower():
            version = re.match(
                r"\d+\.\d+\.\d+", str((component.get("Details") or {}).get("APIVersion") or "")
            )
            if version:
                return version[0]  # without a suffix such as -dev
    return FALLBACK_VERSION


def _port_mappings(ports: dict[str, Any]) -> list[dict[str, Any]]:
    mappings = []
    for key, binding in ports.items():
        port, _, protocol = str(key).partition("/")
        host_ip, host_port = "", 0
        if isinstance(binding, tuple):
            host_ip, host_port = binding[0], binding[1] or 0
        elif binding is not None:
            host_port = int(binding)
        mappings.append(
            {
                "container_port": int(port),
                "host_ip": host_ip,
                "host_port": int(host_port),  # 0: a free port, as Docker's None
                "protocol": protocol or "tcp",
            }
        )
    return mappings


def _devices(requests_: list[dict[str, Any]]) -> list[dict[str, str]]:
    devices = []
    for request in requests_:
        if request.get("Driver") != "cdi":
            raise ValueError("Podman attaches devices by CDI name only (driver cdi)")
        devices += [{"path": name} for name in request.get("DeviceIDs") or []]
    return devices


def _log_configuration(config: dict[str, Any]) -> dict[str, Any]:
    options = dict(config.get("Config") or {})
    result: dict[str, Any] = {"driver": config.get("Type") or "json-file"}
    if "max-size" in options:
        result["size"] = _decimal_size(str(options.pop("max-size")))
    options.pop("max-file", None)  # Podman keeps one file of at most `size`
    if options:
        raise ValueError(f"no libpod translation for the log options {sorted(options)}")
    return result


def spec_generator(image: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The libpod SpecGenerator for `containers.create(image, **kwargs)`; ValueError for an
    argument it cannot carry over."""
    # As the compatible API creates them: a forced removal kills at once, as Docker's does (a stop
    # gives its own grace).
    spec: dict[str, Any] = {"image": image, "stop_timeout": 0}
    limits: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "detach":
            continue
        elif key in ("name", "labels", "command", "entrypoint", "cap_add", "cap_drop"):
            if key in ("command", "entrypoint") and isinstance(value, str):
                raise ValueError(f"{key} must be a list of arguments")
            spec[key] = value
        elif key == "environment":
            if not isinstance(value, dict):
                raise ValueError("environment must be a mapping")
            spec["env"] = {str(k): str(v) for k, v in value.items()}
        elif key == "ports":
            spec["portmappings"] = _port_mappings(value)
        elif key == "network":
            spec["netns"] = {"nsmode": "bridge"}
            spec["Networks"] = {value: {}}
        elif key == "network_mode":
            if value not in ("none", "bridge", "host"):
                raise ValueError(f"no libpod translation for network_mode {value!r}")
            spec["netns"] = {"nsmode": value}
        elif key == "security_opt":
            unknown = [opt for opt in value if opt not in NO_NEW_PRIVILEGES]
            if unknown:
                raise ValueError(f"no libpod translation for security_opt {unknown}")
            spec["no_new_privileges"] = bool(value)
        elif key == "log_config":
            spec["log_configuration"] = _log_configuration(value)
        elif key == "device_requests":
            spec["devices"] = _devices(value)
        elif key == "pids_limit":
            limits["pids"] = {"limit": int(value)}
        elif key == "mem_limit":
            limits.setdefault("memory", {})["limit"] = _bytes(value)
        elif key == "memswap_limit":
            limits.setdefault("memory", {})["swap"] = _bytes(value)
        elif key == "nano_cpus":
            limits["cpu"] = {"quota": int(value) * CPU_PERIOD // 10**9, "period": CPU_PERIOD}
        else:
            raise ValueError(f"no libpod translation for the argument {key!r}")
    if limits:
        spec["resource_limits"] = limits
    return spec


def create(client: docker.DockerClient, image: str, kwargs: dict[str, Any], *, version: str) -> Any:
    """Create the container through libpod (API `version`): the Docker SDK's Container, or the
    errors `containers.create` raises (ImageNotFound, APIError)."""
    api = client.api
    path = CREATE_PATH.format(version=version)
    response = api.post(
        api.base_url + path, json=spec_generator(image, kwargs), timeout=api.timeout
    )
    if not response.ok:
        try:
            explanation = str(response.json()["message"])
        except (ValueError, KeyError, TypeError):
            explanation = response.text.strip()
        # libpod answers 500 "image not known" where Docker answers 404 "No such image".
        error = (
            docker.errors.ImageNotFound
            if "image not known" in explanation
            else docker.errors.APIError
        )
        raise error(
            f"{response.status_code} {response.reason}: {path}",
            response=response,
            explanation=explanation,
        )
    return client.containers.get(response.json()["Id"])
