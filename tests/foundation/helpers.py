"""Test helpers: the error-shape assertion, apps with other settings, a production environment."""

from __future__ import annotations

import os
from http import HTTPStatus
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask


def settings_with(**overrides: str | None) -> Any:
    """The test settings with some variables changed (None removes one)."""
    from app.config import load_settings

    environ = {**os.environ}
    for name, value in overrides.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return load_settings(environ=environ)


def app_with(**overrides: str | None) -> Flask:
    """A separate application whose settings differ from the test app's in `overrides`."""
    from app import create_app

    return create_app(settings_with(**overrides))


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def production_env(clerk_public_pem: str) -> dict[str, str]:
    """Every variable production requires, valid, pointing at the test services."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEV_JWT_PRIVATE_KEY", "CLERK_JWKS_URL", "CLERK_AUTHORIZED_PARTIES")
    }
    env.update(
        {
            "APP_ENV": "production",
            "CLERK_JWT_KEY": clerk_public_pem,
            "CLERK_ISSUER": "https://clerk.example.com",
            "PUBLIC_PROXY_HOST": "proxy.example.com",
            "FRPS_ADDR": "frps.example.com",
            "FRPS_TOKEN": "prod-frps-token-5b1e",
            "FRPS_PLUGIN_SECRET": "prod-plugin-secret-77c2",
            "METRICS_TOKEN": "prod-metrics-token-0a9d",
            "ADMIN_USER_IDS": "user_2prodadmin",
        }
    )
    return env


def assert_error(response, code: int, *, errors: bool = False) -> dict:
    """The response is the platform's one JSON error shape, with `code`."""
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    allowed = {"code", "status", "message", "errors"}
    assert set(body) <= allowed and {"code", "status", "message"} <= set(body), body
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    assert ("errors" in body) == errors, body
    return body
