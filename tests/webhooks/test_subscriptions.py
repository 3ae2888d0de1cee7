"""POST/GET/DELETE /webhooks: the secret shown once, the cap, and the address checks."""

from __future__ import annotations

import pytest

PRIVATE_URLS = [
    "https://127.0.0.1/hook",
    "https://localhost:8443/hook",  # a name that resolves to loopback
    "https://vm/hook",  # a name from /etc/hosts that resolves to loopback
    "https://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "https://172.16.5.4/hook",
    "https://169.254.169.254/latest/meta-data",  # cloud metadata
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[fd00::1]/hook",
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",
    "https://100.64.0.1/hook",
]


def _post(client, user, url, events=("rental.active",)):
    return client.post(
        "/api/v1/webhooks", json={"url": url, "events": list(events)}, headers=user.headers
    )


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_subscription_to_an_internal_address_is_refused_in_production(
    client, user, production_like, url
):
    response = _post(client, user, url)

    assert response.status_code == 422, response.json
    assert "url" in response.json["errors"]


def test_production_refuses_plain_http_and_accepts_https_to_a_public_address(
    client, user, production_like
):
    refused = _post(client, user, "http://93.184.215.14/hook")
    accepted = _post(client, user, "https://93.184.215.14/hook")

    assert refused.status_code == 422
    assert "https://" in refused.json["message"]
    assert accepted.status_code == 201, accepted.json


def test_development_allows_a_loopback_receiver_and_shows_the_secret_only_once(client, user):
    created = _post(client, user, "http://127.0.0.1:9/hook", ["rental.active", "balance.low"])

    assert created.status_code == 201, created.json
    body = created.json
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["events"] == ["rental.active", "balance.low"]
    assert body["active"] is True and body["disabled_reason"] is None
    listed = client.get("/api/v1/webhooks", headers=user.headers).json
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert "secret" not in listed["items"][0]


def test_unknown_events_and_bad_urls_are_422(client, user):
    assert _post(client, user, "http://127.0.0.1/h", ["rental.exploded"]).status_code == 422
    assert _post(client, user, "http://127.0.0.1/h", []).status_code == 422
    assert _post(client, user, "ftp://127.0.0.1/h").status_code == 422
    assert _post(client, user, "http://user:pw@127.0.0.1/h").status_code == 422
    assert _post(client, user, "http://no-such-host.invalid/h").status_code == 422


def test_a_user_cannot_exceed_the_subscription_cap(client, user, app, settings):
    import dataclasses

    app.config["DC_SETTINGS"] = dataclasses.replace(settings, webhook_max_subscriptions=2)
    try:
        codes = [_post(client, user, f"http://127.0.0.1/{i}").status_code for i in range(3)]
        refused = _post(client, user, "http://127.0.0.1/again")
    finally:
        app.config["DC_SETTINGS"] = settings

    assert codes == [201, 201, 409]
    assert "delete one" in refused.json["message"]


def test_another_users_subscription_is_404_and_delete_removes_it(client, user, other_user):
    sub = _post(client, user, "http://127.0.0.1/hook").json

    assert (
        client.delete(f"/api/v1/webhooks/{sub['id']}", headers=other_user.headers).status_code
        == 404
    )
    assert (
        client.get(
            f"/api/v1/webhooks/{sub['id']}/deliveries", headers=other_user.headers
        ).status_code
        == 404
    )
    assert client.delete(f"/api/v1/webhooks/{sub['id']}", headers=user.headers).status_code == 204
    assert client.get("/api/v1/webhooks", headers=user.headers).json["items"] == []
