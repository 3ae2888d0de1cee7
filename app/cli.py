"""Flask CLI commands: `flask --app wsgi dev-token`, `openapi`."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app

from app.auth.tokens import mint_dev_token
from app.billing.audit import check_invariants
from app.db import session_scope
from app.errors import DomainError
from app.extensions import api


def register_cli(app: Flask) -> None:
    @app.cli.command("dev-token")
    @click.argument("clerk_user_id")
    @click.option("--email", default=None, help="Email claim to include.")
    @click.option("--ttl", default=24 * 3600, show_default=True, help="Lifetime in seconds.")
    def dev_token(clerk_user_id: str, email: str | None, ttl: int) -> None:
        """Print a session token that the local platform accepts (development key only)."""
        settings = current_app.config["DC_SETTINGS"]
        try:
            click.echo(mint_dev_token(settings, clerk_user_id, email=email, ttl_seconds=ttl))
        except DomainError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)

    @app.cli.command("openapi")
    @click.option("--output", "-o", default="docs/openapi.json", show_default=True)
    def openapi(output: str) -> None:
        """Write the OpenAPI document."""
        Path(output).write_text(openapi_document())
        click.echo(f"wrote {output}")

    @app.cli.command("billing-check")
    def billing_check() -> None:
        """Check the ledger's invariants; print any difference and exit 1 if there is one."""
        with session_scope() as session:
            report = check_invariants(session)
        click.echo(json.dumps(report, indent=2, default=str))
        if not report["ok"]:
            sys.exit(1)


def openapi_document() -> str:
    """The OpenAPI document as docs/openapi.json holds it (call inside an app context)."""
    return json.dumps(api.spec.to_dict(), indent=2, sort_keys=True, default=_json_number) + "\n"


def _json_number(value: Any) -> Any:
    # Schemas may bound numbers with Decimal (validate.Range); OpenAPI wants JSON numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
