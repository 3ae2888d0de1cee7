"""Renter commands: search, rent, ls, show, logs, ssh, stop."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.status import Status

from dc_client.cli import render
from dc_client.cli.context import fail, json_option, key_values, state
from dc_client.client import RENTAL_FINAL, new_idempotency_key
from dc_client.types import Rental

OFFER_COLUMNS: list[render.Column] = [
    ("NODE", lambda o: o.get("node_id")),
    ("GPU", lambda o: o.get("gpu_model")),
    ("FREE", lambda o: f"{o.get('gpu_free', o.get('gpu_count'))}/{o.get('gpu_count')}"),
    ("VRAM", lambda o: f"{render.text(o.get('gpu_vram_gb'))} GB"),
    ("TFLOPS", lambda o: o.get("tflops")),
    ("CPU", lambda o: o.get("cpu_cores")),
    ("RAM", lambda o: f"{render.text(o.get('ram_gb'))} GB"),
    ("$/HR", lambda o: render.money(o.get("hourly_rate"))),
    ("$/GPU/HR", lambda o: render.money(o.get("price_per_gpu"))),
    ("WHERE", lambda o: render.location(o.get("location"))),
    ("VERIFIED", lambda o: o.get("verified")),
]

RENTAL_COLUMNS: list[render.Column] = [
    ("ID", lambda r: r.get("id")),
    ("STATUS", lambda r: r.get("status")),
    ("PHASE", lambda r: r.get("phase")),
    ("IMAGE", lambda r: r.get("image")),
    ("$/HR", lambda r: render.money(r.get("cost_per_hour"))),
    ("COST", lambda r: render.money(r.get("cost_so_far"))),
    ("CREATED", lambda r: render.when(r.get("created_at"))),
]


def register(cli: click.Group) -> None:
    for command in (search, rent, ls, show, logs, ssh, stop):
        cli.add_command(command)


@click.command()
@click.argument("query", nargs=-1)
@click.option(
    "--sort",
    help="relevance (default), price (the whole node), -price, price_per_gpu, distance, "
    "tflops, value.",
)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@json_option
def search(query: tuple[str, ...], sort: str | None, limit: int) -> None:
    """Search the marketplace; QUERY is the `q` language: 'gpu_vram_gb>=24 gpu_count>=2'."""
    q = " ".join(query) or None
    page = state().client().search_offers(q, sort=sort, limit=limit)
    if state().json:
        render.emit_json(page)
        return
    render.table(page["items"], OFFER_COLUMNS, empty="No offers match.")


@click.command()
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--image", required=True, help="Container image, e.g. pytorch/pytorch:latest.")
@click.option("--gpus", type=click.IntRange(min=1), help="GPUs to take (default: all: the node).")
@click.option(
    "--port", "ports", type=click.IntRange(1, 65535), multiple=True, help="Expose a port."
)
@click.option("--env", "env", multiple=True, callback=key_values, help="K=V, repeatable.")
@click.option(
    "--ssh-key",
    "ssh_keys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A public key file to add to root's authorized_keys.",
)
@click.option(
    "--onstart",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A shell script run once after the container starts.",
)
@click.option("--label", "labels", multiple=True, callback=key_values, help="k=v, repeatable.")
@click.option("--max-rate", help="Refuse if the price per hour is above this (e.g. 1.50).")
@click.option("--wait", is_flag=True, help="Wait until the rental is active (or failed).")
@click.option("--wait-timeout", type=float, default=900.0, show_default=True)
@click.option("--idempotency-key", help="Reuse a key to make a retried script rent once.")
@json_option
def rent(
    node: str,
    command: tuple[str, ...],
    image: str,
    gpus: int | None,
    ports: tuple[int, ...],
    env: dict[str, str],
    ssh_keys: tuple[Path, ...],
    onstart: Path | None,
    labels: dict[str, str],
    max_rate: str | None,
    wait: bool,
    wait_timeout: float,
    idempotency_key: str | None,
) -> None:
    """Rent NODE and run IMAGE on it; anything after `--` replaces the image's command.

    \b
    dc rent 3f0c... --image busybox --port 22 --wait -- sh -c 'sleep infinity'
    id=$(dc rent 3f0c... --image busybox --wait --json | jq -r .id)
    """
    client = state().client()
    rental = client.create_rental(
        node,
        image,
        command=list(command) or None,
        env=env or None,
        ports=list(ports) or None,
        gpu_count=gpus,
        ssh_keys=[p.read_text().strip() for p in ssh_keys] or None,
        onstart=onstart.read_text() if onstart else None,
        labels=labels or None,
        max_hourly_rate=max_rate,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    if wait:
        rental = _wait(rental, "active", timeout=wait_timeout)
    _print_rental(rental)
    if rental.get("status") == "cancelled":
        fail(f"rental {rental.get('id')} did not start: {_failure(rental)}")


@click.command("ls")
@click.option("--label", "labels", multiple=True, help="k=v; several must all match.")
@click.option("--status", type=click.Choice(["pending", "active", "completed", "cancelled"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def ls(labels: tuple[str, ...], status: str | None, limit: int) -> None:
    """List my rentals, newest first."""
    for label in labels:
        if "=" not in label:
            raise click.BadParameter(f"expected k=v, got {label!r}", param_hint="--label")
    items, cursor = _collect(
        state().client().list_rentals, limit, label=list(labels) or None, status=status
    )
    if state().json:
        render.emit_json({"items": items, "next_cursor": cursor})
        return
    render.table(items, RENTAL_COLUMNS, empty="No rentals.")


@click.command()
@click.argument("rental_id", metavar="RENTAL")
@json_option
def show(rental_id: str) -> None:
    """Show one rental: status, cost so far, connection details."""
    _print_rental(state().client().get_rental(rental_id))


@click.command()
@click.argument("rental_id", metavar="RENTAL")
@click.option("--tail", type=click.IntRange(1, 5000), default=200, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until it ends.")
@click.option("--interval", type=float, default=2.0, show_default=True, hidden=True)
@json_option
def logs(rental_id: str, tail: int, follow: bool, interval: float) -> None:
    """Print the container's output."""
    client = state().client()
    page = client.rental_logs(rental_id, tail=tail)
    if state().json and not follow:
        render.emit_json(page)
        return
    _print_lines(page["lines"])
    seen = page["lines"]
    while follow:
        ended = client.get_rental(rental_id).get("status") in RENTAL_FINAL
        time.sleep(0 if ended else interval)
        page = client.rental_logs(rental_id, tail=tail)
        fresh = new_lines(seen, page["lines"])
        _print_lines(fresh)
        seen = page["lines"]
        if ended:
            return


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of `after` that follow what `before` already showed (two tails of one log)."""
    for overlap in range(min(len(before), len(after)), 0, -1):
        if before[-overlap:] == after[:overlap]:
            return after[overlap:]
    return after


def _print_lines(lines: list[str]) -> None:
    if state().json:
        for line in lines:
            render.emit_json(line)
        return
    for line in lines:
        click.echo(line)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("rental_id", metavar="RENTAL")
@click.argument("ssh_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--print", "print_only", is_flag=True, help="Print the ssh command, do not run it.")
@click.option("--user", default="root", show_default=True)
@json_option
def ssh(rental_id: str, ssh_args: tuple[str, ...], print_only: bool, user: str) -> None:
    """Open a shell in the rental with the system's ssh (extra arguments go to ssh)."""
    rental = state().client().get_rental(rental_id)
    argv = ssh_command(rental, user=user) + list(ssh_args)
    if state().json:
        render.emit_json({"argv": argv, "command": shlex.join(argv)})
        return
    if print_only:
        click.echo(shlex.join(argv))
        return
    os.execvp(argv[0], argv)  # noqa: S606 - replacing dc with ssh is the point


def ssh_command(rental: Rental, *, user: str = "root") -> list[str]:
    info = rental.get("connection_info") or {}
    host = info.get("host")
    port = (info.get("ports") or {}).get("22")
    if rental.get("status") != "active" or not host:
        fail(f"rental {rental.get('id')} is {rental.get('status')}: nothing to connect to")
    if port is None:
        fail(f"rental {rental.get('id')} does not expose port 22 (rent it with --port 22)")
    return ["ssh", "-p", str(port), f"{user}@{host}"]


@click.command()
@click.argument("rental_id", metavar="RENTAL")
@click.option("--wait", is_flag=True, help="Wait until the container is gone and billing closed.")
@click.option("--wait-timeout", type=float, default=300.0, show_default=True)
@json_option
def stop(rental_id: str, wait: bool, wait_timeout: float) -> None:
    """Stop a rental (a pending one is cancelled); asking again changes nothing."""
    rental = state().client().stop_rental(rental_id)
    if wait:
        rental = _wait(rental, "ended", timeout=wait_timeout)
    _print_rental(rental)


# ---------------------------------------------------------------------------- helpers
def _collect(fetch: Any, limit: int, **kwargs: Any) -> tuple[list[Any], str | None]:
    """Follow `next_cursor` until `limit` items; return them and the cursor to go on from."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = fetch(limit=min(200, limit - len(items)), cursor=cursor, **kwargs)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or len(items) >= limit:
            return items[:limit], cursor


def _stage(rental: Mapping[str, Any]) -> str:
    status = str(rental.get("status"))
    phase = rental.get("phase")
    words = status if not phase or phase == status else f"{status} · {phase}"
    progress = rental.get("progress")
    if phase == "pulling" and isinstance(progress, int | float):
        words += f" {render.progress_bar(float(progress))}"
    return words


def _wait(rental: Rental, goal: str, *, timeout: float) -> Rental:
    """Poll until active (or ended) with a live line on stderr; each change is kept above it."""
    rental_id = str(rental.get("id"))
    started = time.monotonic()
    shown: list[str] = []

    def done(r: Rental) -> bool:
        status = r.get("status")
        return status in RENTAL_FINAL or (goal == "active" and status == "active")

    live: Status | None = None
    if render.stderr_is_terminal() and not done(rental):
        live = render.err.status(f"rental {rental_id}: {_stage(rental)}", spinner="dots")
        live.start()

    def update(r: Rental) -> None:
        stage = _stage(r)
        elapsed = time.monotonic() - started
        phase_key = stage.split(" ━")[0].split(" ─")[0]
        if not shown or shown[-1] != phase_key:
            shown.append(phase_key)
            render.err.print(f"[dim]{elapsed:5.1f}s[/dim]  {render.escape(stage)}")
        if live is not None:
            live.update(f"rental {rental_id}: {render.escape(stage)}  [dim]{elapsed:.0f}s[/dim]")

    try:
        update(rental)
        if done(rental):
            return rental
        return (
            state()
            .client()
            .wait_for_rental(rental_id, until=done, timeout=timeout, interval=1.0, on_update=update)
        )
    finally:
        if live is not None:
            live.stop()


def _failure(rental: Mapping[str, Any]) -> str:
    code = rental.get("failure_code")
    reason = rental.get("failure_reason") or "no reason given"
    return f"{reason} ({code})" if code else str(reason)


def _print_rental(rental: Rental) -> None:
    if state().json:
        render.emit_json(rental)
        return
    info = rental.get("connection_info") or {}
    render.fields(
        [
            ("id", rental.get("id")),
            ("status", _stage(rental)),
            ("node", rental.get("node_id")),
            ("image", rental.get("image")),
            ("gpus", rental.get("gpu_count")),
            ("price", f"{render.money(rental.get('cost_per_hour'))}/hr"),
            ("cost so far", render.money(rental.get("cost_so_far"))),
            ("labels", rental.get("labels")),
            ("host", info.get("host")),
            ("ports", info.get("ports")),
            ("ssh", info.get("ssh")),
            ("failure", _failure(rental) if rental.get("status") == "cancelled" else None),
            (
                "started",
                render.when(rental.get("start_time")) if rental.get("start_time") else None,
            ),
            ("ended", render.when(rental.get("end_time")) if rental.get("end_time") else None),
        ]
    )
