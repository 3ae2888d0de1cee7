"""docker-compose.yml publishes its ports: it must run production and require every secret."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD",
    "CLERK_ISSUER",
    "FRPS_TOKEN",
    "FRPS_PLUGIN_SECRET",
    "METRICS_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
}


def _references(text: str) -> list[tuple[str, str]]:
    """(variable, operator and rest) for every ${...} in the file, outermost first."""
    return re.findall(r"\$\{([A-Z][A-Z0-9_]*)((?::?[-?])[^}]*)?\}", text)


def test_compose_requires_every_secret_and_defaults_none():
    text = COMPOSE.read_text()
    refs = _references(text)
    seen = {name for name, _ in refs}
    assert seen >= SECRETS, f"not referenced: {SECRETS - seen}"
    for name, rest in refs:
        if name in SECRETS:
            assert rest.startswith(":?"), f"${{{name}}} must be required (:?), not {rest!r}"


def test_compose_runs_production_without_known_development_values():
    text = COMPOSE.read_text()
    assert re.findall(r"^\s+APP_ENV:\s*(.*)$", text, re.M) == ["production"]
    for value in ("dev-frps-token", "dev-plugin-secret", "dev-metrics-token", "change-me"):
        assert value not in text
    assert "postgres:postgres@" not in text
    assert ":-admin}" not in text


def _services() -> dict[str, str]:
    """Each service's block of text (the file is plain YAML: two-space indents, no anchors in
    service names), with the x-app anchor's block merged into those that use it."""
    text = COMPOSE.read_text()
    anchor = text.split("\nservices:\n")[0]
    body = text.split("\nservices:\n")[1].split("\nvolumes:\n")[0]
    blocks = re.split(r"^  ([a-z][a-z0-9_-]*):\n", body, flags=re.M)[1:]
    services = dict(zip(blocks[::2], blocks[1::2], strict=True))
    return {n: (anchor + b if "<<: *app" in b else b) for n, b in services.items()}


def test_every_long_running_compose_service_restarts():
    services = _services()
    assert {"postgres", "redis", "api", "ws", "worker", "scheduler", "frps"} <= set(services)
    for name, block in services.items():
        restarts = re.findall(r"^\s+restart:\s*(.*)$", block, re.M)
        expected = '"no"' if name == "migrate" else "unless-stopped"
        assert restarts and restarts[-1] == expected, (name, restarts)
