"""Helpers for the ops tests: a worker process with the test actors, and reading the page."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from html.parser import HTMLParser

from app.ops.queues import QueueInspector, platform_queues
from app.redis_client import get_redis
from tests.procs import Proc, wait_until


def inspector() -> QueueInspector:
    return QueueInspector(get_redis(), known_queues=platform_queues())


@contextlib.contextmanager
def ops_worker(
    name: str = "ops-worker",
    threads: int = 2,
    env: dict[str, str] | None = None,
    queues: list[str] | None = None,
) -> Iterator[Proc]:
    """A real `dramatiq` worker process running the platform's and the test actors."""
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers",
        "tests.ops.failing_actors",
        "--processes",
        "1",
        "--threads",
        str(threads),
    ]
    if queues:
        argv += ["--queues", *queues]
    proc = Proc(name, argv, env)
    proc.start()
    try:

        def registered() -> bool:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.tail()}")
            return any(w.role == "worker" and w.alive for w in inspector().workers())

        wait_until(registered, timeout=30, what="the worker to register and poll")
        yield proc
    finally:
        proc.stop()


class PageReader(HTMLParser):
    """The numbers in the page's queue table, the CSRF token and the dead-letter form actions."""

    def __init__(self, html: str):
        super().__init__()
        self.queues: dict[str, dict[str, int]] = {}
        self.csrf: str | None = None
        self.forms: list[str] = []
        self.dead_letter_ids: list[str] = []
        self._queue: str | None = None
        self._field: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "meta" and a.get("name") == "csrf-token":
            self.csrf = a.get("content")
        elif tag == "tr" and a.get("data-queue"):
            self._queue = a["data-queue"]
            self.queues[self._queue] = {}
        elif tag == "tr" and a.get("data-id"):
            self.dead_letter_ids.append(a["data-id"] or "")
        elif tag == "td" and self._queue and a.get("data-field"):
            self._field = a["data-field"]
        elif tag == "form" and a.get("action"):
            self.forms.append(a["action"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None
        elif tag == "tr":
            self._queue = None

    def handle_data(self, data: str) -> None:
        if self._queue and self._field and data.strip():
            self.queues[self._queue][self._field] = int(data.strip())
