"""The client is a distribution of its own: it installs and passes its tests in a virtualenv that
holds nothing of the platform (no Flask, no SQLAlchemy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ARTIFACTS, ROOT

pytestmark = pytest.mark.slow


def run(argv: list[str], *, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    installed = run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "./client", "pytest"]
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_client_installs_without_the_platforms_server_dependencies(client_venv):
    python = str(client_venv / "bin" / "python")
    probe = run(
        [
            python,
            "-c",
            "import importlib.util, json, dc_client; print(json.dumps({m: bool("
            "importlib.util.find_spec(m)) for m in ('flask', 'sqlalchemy', 'dramatiq', "
            "'app', 'agent', 'workers')} | {'at': dc_client.__file__}))",
        ],
        cwd=client_venv,
    )
    assert probe.returncode == 0, probe.stderr
    import json

    found = json.loads(probe.stdout)
    assert str(client_venv) in found.pop("at")  # the installed copy, not the checkout
    assert found == dict.fromkeys(
        ("flask", "sqlalchemy", "dramatiq", "app", "agent", "workers"), False
    )


def test_dc_help_runs_from_the_client_only_virtualenv(client_venv):
    helped = run([str(client_venv / "bin" / "dc"), "--help"], cwd=client_venv)
    assert helped.returncode == 0, helped.stderr
    for command in ("search", "rent", "stop", "nodes", "keys", "ssh-keys", "webhooks"):
        assert f"  {command} " in helped.stdout


def test_the_clients_own_tests_pass_in_the_client_only_virtualenv(client_venv):
    tested = run(
        [str(client_venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT / "client",
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "client-own-tests.txt").write_text(tested.stdout + tested.stderr)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout
    assert " failed" not in tested.stdout
