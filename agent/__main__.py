"""``python -m agent`` / ``dc-agent``: run the host agent until SIGTERM or SIGINT.

``dc-agent detect [--json]`` prints the machine's hardware in the platform's `specs` shape and
exits, without a connection; DC_AGENT_FAKE_GPUS is the one setting it reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from agent.config import ConfigError, fake_gpus_from_env, load_settings


def detect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dc-agent detect",
        description="Print this machine's hardware as the platform's node specs.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for programs")
    parser.add_argument("--disk-path", default="/", help="the disk rentals use (default /)")
    args = parser.parse_args(argv)
    try:
        fake_gpus = fake_gpus_from_env()
    except ConfigError as exc:
        print(f"dc-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level="ERROR", stream=sys.stderr)
    # Imported here so that `detect` works without settings and stays fast to answer --help.
    from agent.hardware import Hardware

    specs = Hardware(args.disk_path, fake_gpus=fake_gpus).node_specs()
    if args.json:
        print(json.dumps(specs))
    else:
        for key, value in specs.items():
            print(f"{key:<12} {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["detect"]:
        return detect(args[1:])
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"dc-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported after the settings are valid, so a bad setting answers fast and alone.
    from agent.daemon import Agent

    agent = Agent(settings)

    def _stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("agent").info("signal %s received: stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
