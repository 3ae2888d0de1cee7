"""Fixtures of the client's own tests: a scripted local server and the installed `dc`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localserver import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


DC = Path(sys.executable).parent / "dc"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def dc(tmp_path: Path) -> Callable[..., Ran]:
    """Run the installed `dc` as a person's shell would, with a config folder of its own."""
    assert DC.exists(), f"{DC} is missing: install the client (pip install ./client)"

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Ran:
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DC_API_URL", "DC_API_KEY", "DC_CONFIG")
        }
        full_env = {**base, "XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})}
        done = subprocess.run(
            [str(DC), *args], capture_output=True, text=True, env=full_env, timeout=timeout
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    return run
