from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest

import app.config
from app.config import Settings
from tests.procs import Proc, scheduler_process, wait_until, worker_process
from tests.rentals.conftest import host, online_node, renter  # noqa: F401 (the same fixtures)
from tests.webhooks.receiver import Receiver

# Retries in fractions of a second, a short attempt timeout, and a broker that hands a killed
# worker's messages back within seconds.
FAST = {
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOK_TIMEOUT_SECONDS": "6",
    "WEBHOOK_SWEEP_SECONDS": "1",
    "DC_BROKER_HEARTBEAT_TIMEOUT_MS": "1500",
    "DC_BROKER_MAINTENANCE_CHANCE": "1000000",
}


def set_settings(settings: Settings) -> None:
    """Replace this process's settings (what get_settings() returns to the actors called here)."""
    app.config._settings = settings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def subscribe(client):
    """subscribe(user, url, events) -> the 201 body (with the secret)."""

    def _subscribe(user, url: str, events: list[str]) -> dict:
        response = client.post(
            "/api/v1/webhooks", json={"url": url, "events": events}, headers=user.headers
        )
        assert response.status_code == 201, response.json
        return response.json

    return _subscribe


@pytest.fixture
def production_like(app, settings):
    """The API checks URLs as production does (https only, no loopback) while this runs."""
    app.config["DC_SETTINGS"] = dataclasses.replace(
        settings, app_env="production", webhook_allow_loopback=False
    )
    yield
    app.config["DC_SETTINGS"] = settings


@contextlib.contextmanager
def webhook_worker(name: str = "webhook-worker", **env: str) -> Iterator[Proc]:
    proc = worker_process({**FAST, **env}, name=name).start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def scheduler(**env: str) -> Iterator[Proc]:
    proc = scheduler_process({**FAST, **env}).start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_for(check, timeout: float = 40, what: str = "condition", proc: Proc | None = None):
    try:
        return wait_until(check, timeout=timeout, interval=0.1, what=what)
    except TimeoutError:
        raise TimeoutError(f"{what}; worker log:\n{proc.tail() if proc else ''}") from None
