"""The agent installs on its own: a fresh virtualenv gets the agent and none of the platform."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("agent-dist")
    # A copy, so that pip's in-tree build leaves nothing in the checkout.
    source = base / "agent"
    shutil.copytree(
        ROOT / "agent", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
        cwd=base,
    )
    return venv


def _run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout: the installed package must stand alone.
    return subprocess.run(
        argv, cwd=venv, capture_output=True, text=True, timeout=120, env={"PATH": str(venv / "bin")}
    )


def test_the_agent_distribution_installs_without_flask_or_sqlalchemy(agent_venv):
    python = str(agent_venv / "bin" / "python")
    probe = _run(
        agent_venv,
        python,
        "-c",
        "import importlib.util as u, json, agent.daemon, agent.protocol; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('flask', 'sqlalchemy', 'app', 'workers', 'gunicorn', 'psycopg2')}))",
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == dict.fromkeys(
        ("flask", "sqlalchemy", "app", "workers", "gunicorn", "psycopg2"), False
    )
    listed = _run(agent_venv, str(agent_venv / "bin" / "pip"), "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"dc-agent", "docker", "marshmallow", "websocket-client", "psutil"} <= names
    assert "nvidia-ml-py" in names


def test_the_installed_dc_agent_command_answers_help_and_detect(agent_venv):
    helped = _run(agent_venv, str(agent_venv / "bin" / "dc-agent"), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--platform-url" in helped.stdout and "detect" in helped.stdout
    detected = _run(agent_venv, str(agent_venv / "bin" / "dc-agent"), "detect", "--json")
    assert detected.returncode == 0, detected.stderr
    specs = json.loads(detected.stdout)
    assert specs["cpu_cores"] >= 1 and specs["gpu_count"] == 0 and "tflops" in specs
