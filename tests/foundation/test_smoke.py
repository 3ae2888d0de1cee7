def test_health_reports_every_dependency_ok(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ok",
                             "checks": {"database": "ok", "redis": "ok", "influxdb": "ok"}}


def test_me_creates_the_user_on_first_valid_token(client, make_user):
    user = make_user("user_first", email="first@example.com")
    body = client.get("/api/v1/me", headers=user.headers).json
    assert body["clerk_id"] == "user_first"
    assert body["email"] == "first@example.com"
    assert body["balance"] == "0.0000"
    assert body["role"] == "both"
