"""Checks that need the frps binary; they run when FRPS_BIN points to one (none is packaged here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRPS_BIN = os.environ.get("FRPS_BIN")

pytestmark = pytest.mark.skipif(not FRPS_BIN, reason="FRPS_BIN is not set (no frps binary here)")


def test_frps_accepts_the_shipped_config(settings):
    low, high = settings.proxy_port_range
    env = {
        **os.environ,
        "FRPS_TOKEN": "t0ken",
        "FRPS_PLUGIN_SECRET": "s3cret",
        "PROXY_PORT_RANGE": f"{low}-{high}",
        "FRPS_PLUGIN_ADDR": "127.0.0.1:8000",
    }
    result = subprocess.run(
        [str(FRPS_BIN), "verify", "-c", str(ROOT / "deploy" / "frps.toml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
