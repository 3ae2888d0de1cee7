"""The queue dashboard driven in a real headless Chromium against a real server and worker."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from app.ops.models import OpsAuditEvent
from app.redis_client import get_redis
from tests.ops import failing_actors as actors
from tests.ops.cdp import headless_chromium
from tests.ops.helpers import inspector, ops_worker
from tests.procs import api_server, free_port, running, wait_http, wait_until


def _cell(queue: str, field: str) -> str:
    return (
        f"document.querySelector('#queues tr[data-queue={json.dumps(queue)}] "
        f"td[data-field={json.dumps(field)}]')?.textContent"
    )


def test_an_admin_watches_the_queues_refresh_and_requeues_a_dead_letter_in_chromium(admin, db):
    token = uuid.uuid4().hex
    client = get_redis()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        ops_worker(queues=[actors.OPS_QUEUE]),
        running(api_server(port, name="ops-browser-api")) as (api,),
    ):
        actors.fail_until_fixed.send(token)
        for number in range(3):
            actors.idle.send(number)
        wait_until(
            lambda: inspector().stats([actors.OPS_QUEUE])[0].dead == 1, what="the dead letter"
        )
        wait_http(f"{base}/api/v1/health", proc=api)

        with headless_chromium() as page:
            page.call(
                "Network.setCookie",
                name="__session",
                value=admin.token,
                url=base,
                httpOnly=True,
                sameSite="Lax",
            )
            page.goto(f"{base}/ops/queues")

            assert page.evaluate(_cell(actors.IDLE_QUEUE, "ready")) == "3"
            assert page.evaluate(_cell(actors.OPS_QUEUE, "dead")) == "1"
            row = page.evaluate("document.querySelector('#dead-letters tr[data-id]').innerText")
            assert "fail_until_fixed" in row and f"RuntimeError: boom {token}" in row

            # The page refreshes itself from /ops/queues.json without reloading.
            page.evaluate("window.__loadedOnce = 42")
            actors.idle.send(3)
            actors.idle.send(4)
            wait_until(
                lambda: page.evaluate(_cell(actors.IDLE_QUEUE, "ready")) == "5",
                timeout=15,
                what="the refreshed count",
            )
            assert page.evaluate("window.__loadedOnce") == 42
            assert int(page.evaluate("document.body.dataset.refreshes")) >= 1
            assert "live" in page.evaluate("document.getElementById('status-text').textContent")
            shot = page.screenshot("ops-queues.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

            # Requeue from the page: a real form post with the CSRF token, then the worker runs it.
            client.set(f"dc:test:fixed:{token}", "1")
            page.evaluate("document.querySelector('#dead-letters tr[data-id] form button').click()")
            wait_until(
                lambda: page.evaluate(
                    "location.search.includes('done=requeue') && document.readyState === 'complete'"
                ),
                what="the page after the requeue",
            )
            notice = page.evaluate("document.getElementById('notice').textContent")
            assert notice == f"Requeued 1 dead letter of {actors.OPS_QUEUE}."
            wait_until(lambda: client.exists(f"dc:test:done:{token}"), what="the requeued run")
            # After the next refresh: no dead letter, nothing waiting on the test queue (whose
            # row goes once Redis holds nothing for it: the server does not declare test queues).
            wait_until(
                lambda: (
                    page.evaluate(
                        "Number(document.body.dataset.refreshes) > 0"
                        " && !document.querySelector('#dead-letters tr[data-id]')"
                    )
                    and page.evaluate(_cell(actors.OPS_QUEUE, "dead")) in (None, "0")
                    and page.evaluate(_cell(actors.OPS_QUEUE, "ready")) in (None, "0")
                ),
                timeout=15,
                what="the requeued letter gone from the page",
            )
            assert (
                page.evaluate(
                    "document.querySelector('#workers tbody td:nth-child(2)').textContent"
                )
                == actors.OPS_QUEUE
            )
            page.screenshot("ops-queues-after-requeue.png")

    (audit,) = db.scalars(select(OpsAuditEvent)).all()
    assert (audit.action, audit.admin_clerk_id, audit.actor) == (
        "requeue",
        "test-admin",
        "fail_until_fixed",
    )
