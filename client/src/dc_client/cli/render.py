"""Output: one JSON document for programs, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Tables and notes go to stdout; progress, warnings and errors to stderr, so that stdout of a
# `--json` command holds nothing but its one JSON document.
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], *, empty: str) -> None:
    rows = list(rows)
    if not rows:
        err.print(f"[dim]{empty}[/dim]")
        return
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for title, _ in columns:
        # Ids must stay whole: a person copies them into the next command.
        grid.add_column(title, no_wrap=title in ("ID", "NODE"), overflow="fold")
    for row in rows:
        grid.add_row(*(text(getter(row)) for _, getter in columns))
    out.print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A vertical `name  value` listing for one object."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        if value is None or value == "" or value == {}:
            continue
        grid.add_row(name, text(value))
    out.print(grid)


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return escape(str(value))


def money(value: Any) -> str:
    return "-" if value is None else f"${value}"


def when(value: Any) -> str:
    """`2026-11-27T10:00:00.123456Z` -> `2026-11-27 10:00:00`."""
    if not value:
        return "-"
    return str(value).replace("T", " ")[:19]


def location(value: Any) -> str:
    if not isinstance(value, Mapping):
        return "-"
    return ", ".join(str(v) for v in (value.get("city"), value.get("country")) if v) or "-"


def progress_bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "━" * filled + "─" * (width - filled) + f" {fraction * 100:3.0f}%"


def error(message: str) -> None:
    """`error: ...` on stderr, unwrapped, so a script can grep it."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
