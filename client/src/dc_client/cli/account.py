"""Account commands: whoami, balance, transactions, keys, ssh-keys, webhooks."""

from __future__ import annotations

from pathlib import Path

import click

from dc_client.cli import render
from dc_client.cli.context import json_option, state
from dc_client.cli.rentals import _collect


def register(cli: click.Group) -> None:
    for command in (whoami, balance, transactions, keys, ssh_keys, webhooks):
        cli.add_command(command)


@click.command()
@json_option
def whoami() -> None:
    """Show the account the key acts for."""
    me = state().client().me()
    if state().json:
        render.emit_json(me)
        return
    render.fields([(k, me.get(k)) for k in ("id", "email", "role", "balance", "created_at")])


@click.command()
@json_option
def balance() -> None:
    """Show my balance."""
    body = state().client().balance()
    if state().json:
        render.emit_json(body)
        return
    render.out.print(render.money(body.get("balance")))


@click.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def transactions(limit: int) -> None:
    """List my ledger lines, newest first."""
    items, cursor = _collect(state().client().list_transactions, limit)
    if state().json:
        render.emit_json({"items": items, "next_cursor": cursor})
        return
    render.table(
        items,
        [
            ("WHEN", lambda t: render.when(t.get("created_at"))),
            ("TYPE", lambda t: t.get("type")),
            ("AMOUNT", lambda t: render.money(t.get("amount"))),
            ("DESCRIPTION", lambda t: t.get("description")),
            ("REFERENCE", lambda t: t.get("reference_id")),
        ],
        empty="No transactions.",
    )


# ---------------------------------------------------------------------------- API keys
@click.group()
def keys() -> None:
    """My API keys (dck_...) for scripts and this command line."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["full", "read"]), default="full", show_default=True)
@json_option
def keys_create(name: str, scope: str) -> None:
    """Create a key; it is shown this once."""
    body = state().client().create_api_key(name, scope=scope)
    if state().json:
        render.emit_json(body)
        return
    render.out.print(body["api_key"], soft_wrap=True)
    render.err.print(
        f"[yellow]Key {body['key'].get('id')} ({scope}): copy it now, it is not shown again."
    )


@keys.command("ls")
@json_option
def keys_ls() -> None:
    """List my API keys (never the keys themselves)."""
    page = state().client().list_api_keys()
    if state().json:
        render.emit_json(page)
        return
    render.table(
        page["items"],
        [
            ("ID", lambda k: k.get("id")),
            ("NAME", lambda k: k.get("name")),
            ("SCOPE", lambda k: k.get("scope")),
            ("PREFIX", lambda k: k.get("prefix")),
            ("CREATED", lambda k: render.when(k.get("created_at"))),
            ("LAST USED", lambda k: render.when(k.get("last_used_at"))),
        ],
        empty="No API keys.",
    )


@keys.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@json_option
def keys_revoke(key_id: str) -> None:
    """Revoke a key: it stops working at once."""
    state().client().revoke_api_key(key_id)
    _deleted("key", key_id)


# ---------------------------------------------------------------------------- SSH keys
@click.group("ssh-keys")
def ssh_keys() -> None:
    """My account's SSH public keys (added to every rental)."""


@ssh_keys.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Default: the key's comment, else the file name.")
@json_option
def ssh_keys_add(path: Path, name: str | None) -> None:
    """Add the public key in PATH (e.g. ~/.ssh/id_ed25519.pub)."""
    public_key = path.read_text().strip()
    parts = public_key.split()
    name = name or (parts[2] if len(parts) > 2 else path.name)
    body = state().client().add_ssh_key(name, public_key)
    if state().json:
        render.emit_json(body)
        return
    render.out.print(f"Added SSH key {body.get('id')} ({name}).")


@ssh_keys.command("ls")
@json_option
def ssh_keys_ls() -> None:
    """List my SSH keys."""
    page = state().client().list_ssh_keys()
    if state().json:
        render.emit_json(page)
        return
    render.table(
        page["items"],
        [
            ("ID", lambda k: k.get("id")),
            ("NAME", lambda k: k.get("name")),
            ("KEY", lambda k: _short_key(str(k.get("public_key", "")))),
            ("ADDED", lambda k: render.when(k.get("created_at"))),
        ],
        empty="No SSH keys.",
    )


@ssh_keys.command("rm")
@click.argument("key_id", metavar="KEY_ID")
@json_option
def ssh_keys_rm(key_id: str) -> None:
    """Remove an SSH key."""
    state().client().remove_ssh_key(key_id)
    _deleted("SSH key", key_id)


def _short_key(public_key: str) -> str:
    parts = public_key.split()
    if len(parts) < 2:
        return public_key
    return f"{parts[0]} …{parts[1][-12:]}"


# ---------------------------------------------------------------------------- webhooks
EVENTS = (
    "rental.active",
    "rental.failed",
    "rental.completed",
    "rental.stop_requested",
    "balance.low",
    "node.offline",
    "node.online",
)


@click.group()
def webhooks() -> None:
    """Webhook subscriptions (deliveries signed with DC-Signature)."""


@webhooks.command("add")
@click.argument("url")
@click.option(
    "--event", "events", multiple=True, required=True, type=click.Choice(EVENTS), help="Repeatable."
)
@json_option
def webhooks_add(url: str, events: tuple[str, ...]) -> None:
    """Subscribe URL to events; the signing secret is shown this once."""
    body = state().client().create_webhook(url, list(events))
    if state().json:
        render.emit_json(body)
        return
    render.fields(
        [("id", body.get("id")), ("url", body.get("url")), ("events", body.get("events"))]
    )
    render.out.print(f"secret  {body.get('secret')}", soft_wrap=True)
    render.err.print("[yellow]Keep the secret now: it is not shown again.")


@webhooks.command("ls")
@json_option
def webhooks_ls() -> None:
    """List my webhook subscriptions."""
    page = state().client().list_webhooks()
    if state().json:
        render.emit_json(page)
        return
    render.table(
        page["items"],
        [
            ("ID", lambda w: w.get("id")),
            ("URL", lambda w: w.get("url")),
            ("EVENTS", lambda w: w.get("events")),
            ("CREATED", lambda w: render.when(w.get("created_at"))),
        ],
        empty="No webhooks.",
    )


@webhooks.command("rm")
@click.argument("webhook_id", metavar="WEBHOOK_ID")
@json_option
def webhooks_rm(webhook_id: str) -> None:
    """Delete a subscription."""
    state().client().delete_webhook(webhook_id)
    _deleted("webhook", webhook_id)


@webhooks.command("deliveries")
@click.argument("webhook_id", metavar="WEBHOOK_ID")
@json_option
def webhooks_deliveries(webhook_id: str) -> None:
    """Recent deliveries of a subscription, newest first."""
    page = state().client().webhook_deliveries(webhook_id)
    if state().json:
        render.emit_json(page)
        return
    render.table(
        page["items"],
        [
            ("ID", lambda d: d.get("id")),
            ("EVENT", lambda d: d.get("type")),
            ("STATUS", lambda d: d.get("status")),
            ("ATTEMPTS", lambda d: d.get("attempts")),
            ("HTTP", lambda d: d.get("last_status_code")),
            ("NEXT TRY", lambda d: render.when(d.get("next_attempt_at"))),
        ],
        empty="No deliveries yet.",
    )


def _deleted(what: str, object_id: str) -> None:
    if state().json:
        render.emit_json({"id": object_id, "deleted": True})
    else:
        render.out.print(f"Deleted {what} {object_id}.")
