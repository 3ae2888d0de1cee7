"""``python -m agent`` / ``dc-agent``: run the host agent until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from agent.config import ConfigError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
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
