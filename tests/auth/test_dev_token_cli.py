"""`flask --app wsgi dev-token`: works in development, refused in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.auth.tokens import OTHER_KEY, bearer
from tests.foundation.helpers import production_env, public_pem

ROOT = Path(__file__).resolve().parents[2]


def _dev_token(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "dev-token", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_token_prints_a_token_the_platform_accepts_in_development(client):
    result = _dev_token(
        {**os.environ, "APP_ENV": "development"}, "user_cli", "--email", "cli@example.com"
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert response.json["clerk_id"] == "user_cli"
    assert response.json["email"] == "cli@example.com"


def test_dev_token_is_refused_when_the_platform_is_configured_for_production():
    result = _dev_token(production_env(public_pem(OTHER_KEY)), "user_cli")
    assert result.returncode != 0
    assert "refused" in result.stderr and "production" in result.stderr
    assert result.stdout.strip() == ""
