"""Flask CLI commands: `flask --app wsgi dev-token`, `openapi`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask, current_app


def register_cli(app: Flask) -> None:
    @app.cli.command("dev-token")
    @click.argument("clerk_user_id")
    @click.option("--email", default=None, help="Email claim to include.")
    @click.option("--ttl", default=24 * 3600, show_default=True, help="Lifetime in seconds.")
    def dev_token(clerk_user_id: str, email: str | None, ttl: int) -> None:
        """Print a session token that the local platform accepts (development key only)."""
        from app.auth.tokens import mint_dev_token
        from app.errors import DomainError

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
        from app.extensions import api

        Path(output).write_text(json.dumps(api.spec.to_dict(), indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {output}")
