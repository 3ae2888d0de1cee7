"""A minimal Chrome DevTools Protocol driver for headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.procs import ARTIFACTS, free_port, wait_until


def chromium_binary() -> str:
    found = (
        os.environ.get("CHROMIUM_BIN")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not found:
        pytest.fail(
            "headless Chromium is required for the ops page test: install Debian's "
            "`chromium` package (apt-get install chromium) or set CHROMIUM_BIN"
        )
    return found


class Page:
    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_loaded(url.split("?")[0])

    def wait_loaded(self, url_prefix: str, timeout: float = 20) -> None:
        wait_until(
            lambda: self.evaluate(
                f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url_prefix)})"
            ),
            timeout=timeout,
            what=f"{url_prefix} to load",
        )

    def screenshot(self, name: str, max_height: int = 2400) -> Path:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": size["width"],
            "height": min(size["height"], max_height),
            "scale": 1,
        }
        shot = self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


@contextlib.contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[Page]:
    binary = chromium_binary()
    port = free_port()
    profile = tempfile.mkdtemp(prefix="dc-chromium-")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "chromium.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-allow-origins=*",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    page: Page | None = None
    try:

        def target() -> str | None:
            if proc.poll() is not None:
                raise RuntimeError("chromium exited; see tests/artifacts/chromium.log")
            for item in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json():
                if item.get("type") == "page":
                    return item["webSocketDebuggerUrl"]
            return None

        page = Page(str(wait_until(target, timeout=30, what="chromium's debugging endpoint")))
        page.call("Page.enable")
        page.call("Network.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield page
    finally:
        if page is not None:
            page.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
