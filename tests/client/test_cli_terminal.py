"""`dc` as a person sees it: in a tmux pane (a real terminal, so rich draws its tables and the
live phase line), against the real platform. The screens are kept in tests/artifacts/."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.client.test_cli_e2e import offered
from tests.procs import ARTIFACTS, wait_until

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 160, 48
DONE = re.compile(r"dc exited with \d")


class Pane:
    """One tmux server of our own (its own socket), one window running a plain bash."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"dc-test-{uuid.uuid4().hex[:8]}"
        # The shell gets its environment from `env`: tmux keeps its own PATH over `-e PATH=...`.
        shell = shlex.join(
            ["env", *(f"{k}={v}" for k, v in env.items()), "bash", "--noprofile", "--norc"]
        )
        self.tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", "dc", "-x", str(WIDTH), "-y", str(HEIGHT), shell
        )  # fmt: skip
        self.tmux("set-option", "-t", "dc", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "dc", "-l", line)
        self.tmux("send-keys", "-t", "dc", "Enter")

    def screen(self) -> str:
        """What the pane shows now, scroll-back included, without colours."""
        return self.tmux("capture-pane", "-p", "-J", "-t", "dc", "-S", "-200").rstrip() + "\n"

    def showing(self, text: str) -> str | None:
        screen = self.screen()
        return screen if text in screen else None

    def wait_for(self, text: str, timeout: float) -> str:
        try:
            return str(wait_until(lambda: self.showing(text), timeout, what=repr(text)))
        except TimeoutError:
            raise AssertionError(f"the pane never showed {text!r}:\n{self.screen()}") from None

    def wait_idle(self, timeout: float = 30) -> None:
        """Until the last line is the bare prompt: the command before has finished."""

        def idle() -> bool:
            return self.screen().rstrip("\n").splitlines()[-1:] == ["$"]

        wait_until(idle, timeout, what="the shell prompt")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def pane(dc_env, renter, api_key_for) -> Iterator[Pane]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the terminal test (CI installs it: apt-get install tmux)")
    env = {
        "DC_API_URL": dc_env["DC_API_URL"],
        "DC_API_KEY": api_key_for(renter),
        "PATH": dc_env["PATH"],
        "XDG_CONFIG_HOME": dc_env["XDG_CONFIG_HOME"],
        "PS1": "$ ",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }
    terminal = Pane(env)
    yield terminal
    terminal.close()


def test_dc_search_and_rent_wait_look_right_in_a_terminal(pane, dc, online_node, renter):
    node_id = online_node["id"]
    offered(dc, renter, node_id)  # the marketplace lists the node before the person looks

    pane.type("dc search 'cpu_cores>=1' --sort price")
    searched = pane.wait_for("$0.6000", 30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dc-search.screen.txt").write_text(searched)
    header = next(line for line in searched.splitlines() if "NODE" in line)
    for column in ("GPU", "FREE", "VRAM", "TFLOPS", "CPU", "RAM", "$/HR", "WHERE", "VERIFIED"):
        assert column in header
    row = next(line for line in searched.splitlines() if node_id in line)
    assert "$0.6000" in row and "DE" in row

    pane.wait_idle()
    pane.type("clear")
    pane.wait_idle()
    pane.type(
        f"dc rent {node_id} --image localhost/busybox:latest --port 8080 --wait "
        '-- sh -c \'trap "exit 0" TERM; sleep 3600 & wait\'; echo "dc exited with $?"'
    )
    frames: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        screen = pane.screen()
        if not frames or frames[-1] != screen:
            frames.append(screen)
        if DONE.search(screen):
            break
        time.sleep(0.2)
    final = frames[-1]
    (ARTIFACTS / "dc-rent-wait.screen.txt").write_text(final)
    (ARTIFACTS / "dc-rent-wait.frames.txt").write_text(
        "\n".join(f"--- frame {i}\n{f}" for i, f in enumerate(frames))
    )
    try:
        assert "dc exited with 0" in final, final
        assert any("pending" in f for f in frames), "no phase was shown while waiting"
        assert any(": pending" in f and "rental " in f for f in frames), "no live status line"
        lines = final.splitlines()
        assert any(line.split()[1:2] == ["active"] for line in lines if line.startswith("status"))
        assert any(line.startswith("ports") and "8080=" in line for line in lines)
        assert any(line.startswith("node") and node_id in line for line in lines)
    finally:
        for rental in dc("ls", "--status", "active", "--json", as_user=renter).ok().json()["items"]:
            dc("stop", rental["id"], "--wait", "--json", as_user=renter).ok()
