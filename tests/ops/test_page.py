"""/ops/queues: admins only, the counts that were enqueued, dead letters requeued from the page."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select

from app.fleet.commands import send_to_node
from app.fleet.live import Sighting, write_sightings
from app.ops.models import OpsAuditEvent
from app.redis_client import get_redis
from tests.ops import failing_actors as actors
from tests.ops.helpers import PageReader, inspector, ops_worker
from tests.procs import wait_until


@pytest.fixture
def admin_browser(app, admin):
    """A client that carries the admin's Clerk session in the `__session` cookie, as browsers do."""
    browser = app.test_client()
    browser.set_cookie("__session", admin.token)
    return browser


def _page(browser) -> PageReader:
    response = browser.get("/ops/queues")
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "text/html"
    return PageReader(response.get_data(as_text=True))


def test_the_page_is_a_404_for_anonymous_and_non_admin_callers(app, client, user):
    assert client.get("/ops/queues").status_code == 404
    assert client.get("/ops/queues.json").status_code == 404
    assert client.get("/ops/queues", headers=user.headers).status_code == 404
    assert (
        client.get("/ops/queues", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 404
    )
    with_cookie = app.test_client()
    with_cookie.set_cookie("__session", user.token)
    assert with_cookie.get("/ops/queues").status_code == 404
    assert with_cookie.post("/ops/queues/ops_test/dead-letters/discard").status_code == 404


def test_counts_on_the_page_and_in_its_json_match_what_was_enqueued(admin_browser, admin, client):
    for number in range(4):
        actors.idle.send(number)
    actors.idle.send_with_options(args=(9,), delay=120_000)

    page = _page(admin_browser)
    body = client.get("/ops/queues.json", headers=admin.headers).json

    assert page.queues[actors.IDLE_QUEUE] == {"ready": 4, "delayed": 1, "in_flight": 0, "dead": 0}
    assert page.queues["billing"] == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    (row,) = [q for q in body["queues"] if q["name"] == actors.IDLE_QUEUE]
    assert row == {"name": actors.IDLE_QUEUE, "ready": 4, "delayed": 1, "in_flight": 0, "dead": 0}
    assert body["totals"]["ready"] == 4 and body["errors"] == []
    assert set(body["vitals"]["nodes"]) == {"online", "offline", "busy", "maintenance"}


def test_vital_signs_count_nodes_agents_and_the_oldest_unacked_command(
    admin, client, node, register_node, user
):
    import time

    register_node(user)
    client_redis = get_redis()
    now = time.time()
    write_sightings(
        client_redis,
        [Sighting(str(node.id), now, "online"), Sighting(str(uuid.uuid4()), now - 3600, "online")],
    )
    send_to_node(node.id, "drain_node", {"node_id": str(node.id)})  # never acked: no agent

    vitals = client.get("/ops/queues.json", headers=admin.headers).json["vitals"]

    assert vitals["agents_connected"] == 1
    assert (
        vitals["nodes"]["offline"] == 2
    )  # a registered node is offline until its agent says hello
    assert 0 <= vitals["oldest_unacked_command_age_s"] < 10
    assert vitals["oldest_unacked_command_node"] == str(node.id)


def test_a_dead_letter_shows_on_the_page_and_is_requeued_from_it(admin_browser, admin, db, caplog):
    token = uuid.uuid4().hex
    client_redis = get_redis()
    with ops_worker():
        actors.fail_until_fixed.send(token)
        wait_until(
            lambda: inspector().stats([actors.OPS_QUEUE])[0].dead == 1, what="the dead letter"
        )
        html = admin_browser.get("/ops/queues").get_data(as_text=True)
        page = PageReader(html)
        assert page.queues[actors.OPS_QUEUE]["dead"] == 1
        assert f"RuntimeError: boom {token}" in html and "fail_until_fixed" in html
        (letter_id,) = page.dead_letter_ids
        (action,) = [f for f in page.forms if f.endswith(f"{letter_id}/requeue")]

        # The cookie alone is not enough: a form without the page's CSRF token changes nothing.
        assert admin_browser.post(action).status_code == 403
        assert admin_browser.post(action, data={"csrf_token": "x" * 43}).status_code == 403
        refused = admin_browser.post(
            action, data={"csrf_token": page.csrf}, headers={"Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert inspector().stats([actors.OPS_QUEUE])[0].dead == 1

        client_redis.set(f"dc:test:fixed:{token}", "1")
        with caplog.at_level(logging.INFO, logger="app.ops"):
            response = admin_browser.post(action, data={"csrf_token": page.csrf})
        assert response.status_code == 303
        assert "done=requeue" in response.headers["Location"]
        wait_until(lambda: client_redis.exists(f"dc:test:done:{token}"), what="the requeued run")

    after = _page(admin_browser)
    assert after.queues[actors.OPS_QUEUE]["dead"] == 0 and after.dead_letter_ids == []
    (audit,) = db.scalars(select(OpsAuditEvent)).all()
    assert (audit.action, audit.queue, audit.actor, audit.count) == (
        "requeue",
        actors.OPS_QUEUE,
        "fail_until_fixed",
        1,
    )
    assert audit.admin_id == admin.id and audit.admin_clerk_id == "test-admin"
    assert audit.detail["args"] == f'["{token}"]'
    (line,) = [r for r in caplog.records if r.getMessage() == "dead letters requeued"]
    assert line.admin_clerk_id == "test-admin" and line.redis_message_id == letter_id
    # The same letter cannot be requeued twice.
    again = admin_browser.post(action, data={"csrf_token": page.csrf})
    assert again.status_code == 404


def test_bearer_callers_discard_all_without_a_csrf_token_and_get_json(client, admin, db):
    response = client.post(
        f"/ops/queues/{actors.OPS_QUEUE}/dead-letters/discard",
        headers={**admin.headers, "Accept": "application/json"},
    )

    assert response.status_code == 200, response.json
    assert response.json == {
        "action": "discard",
        "queue": actors.OPS_QUEUE,
        "message_id": None,
        "count": 0,
    }
    (audit,) = db.scalars(select(OpsAuditEvent)).all()
    assert (audit.action, audit.count) == ("discard_all", 0)


def test_unknown_queues_and_malformed_ids_are_404s(client, admin):
    headers = {**admin.headers, "Accept": "application/json"}
    assert client.post("/ops/queues/nope/dead-letters/requeue", headers=headers).status_code == 404
    assert (
        client.post(
            f"/ops/queues/{actors.OPS_QUEUE}/dead-letters/x/requeue", headers=headers
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/ops/queues/{actors.OPS_QUEUE}/dead-letters/{uuid.uuid4()}/requeue", headers=headers
        ).status_code
        == 404
    )
    assert client.post(
        f"/ops/queues/{actors.OPS_QUEUE}/dead-letters/{uuid.uuid4()}/explode", headers=headers
    ).status_code in (404, 405)


def test_the_page_is_not_cached_framed_or_scripted_from_elsewhere(admin_browser):
    response = admin_browser.get("/ops/queues")

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in policy and "frame-ancestors 'none'" in policy
    cookie = response.headers["Set-Cookie"]
    assert "dc_ops_csrf=" in cookie and "SameSite=Strict" in cookie and "HttpOnly" in cookie
