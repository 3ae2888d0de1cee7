"""`dc`: the DistributedCompute command line (CONTRACT.md, "Command line and SDK")."""

from __future__ import annotations

import sys

import click
from click.shell_completion import get_completion_class

from dc_client._version import __version__
from dc_client.cli import account, nodes, render, rentals
from dc_client.cli.context import DcGroup, State, json_option, state
from dc_client.client import Client
from dc_client.config import config_path, read_config, resolve, write_config

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=DcGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--api-url", envvar="DC_API_URL", help="The platform's base URL [env DC_API_URL].")
@click.option("--api-key", envvar="DC_API_KEY", help="A user API key (dck_...) [env DC_API_KEY].")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds per HTTP request."
)
@json_option
@click.version_option(__version__, prog_name="dc")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, api_key: str | None, timeout: float) -> None:
    """Rent GPUs and run hosts on DistributedCompute.

    Settings come from flags, then the environment (DC_API_URL, DC_API_KEY), then the file
    `dc login` writes. Every command takes --json for one JSON document on stdout; exit codes
    are 0 (ok), 1 (the API refused: message on stderr) and 2 (bad usage).
    """
    obj = ctx.ensure_object(State)
    obj.api_url, obj.api_key, obj.timeout = api_url, api_key, timeout


@cli.command()
@click.option("--api-key", "key", required=True, help="The key to keep (dck_...).")
@click.option("--api-url", "url", help="The platform's base URL to keep with it.")
@click.option("--no-verify", is_flag=True, help="Keep the key without asking the API about it.")
@json_option
def login(key: str, url: str | None, no_verify: bool) -> None:
    """Keep an API key (and URL) in the config file, readable by you only."""
    path = config_path()
    stored = read_config(path)
    api_url = url or state().api_url or stored.get("api_url")
    settings = resolve(flag_url=api_url, flag_key=key)
    me = None
    if not no_verify:
        with Client(settings.api_url, key, timeout=state().timeout) as client:
            me = client.me()
    write_config(path, {**stored, "api_url": settings.api_url, "api_key": key})
    if state().json:
        render.emit_json({"config": str(path), "api_url": settings.api_url, "me": me})
        return
    who = f" as {me.get('email') or me.get('id')}" if me else ""
    render.out.print(f"Logged in to {settings.api_url}{who}; key kept in {path} (mode 0600).")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(dc completion bash)"."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships both
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, "dc", "_DC_COMPLETE").source())


rentals.register(cli)
account.register(cli)
nodes.register(cli)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="dc")
