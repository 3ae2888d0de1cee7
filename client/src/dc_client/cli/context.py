"""What every command shares: the resolved settings, the client, `--json`, error exits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import click

from dc_client.cli import render
from dc_client.client import Client
from dc_client.config import ConfigError, resolve
from dc_client.errors import ApiError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_API_ERROR = 1


@dataclass
class State:
    api_url: str | None = None
    api_key: str | None = None
    timeout: float = 30.0
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self, *, need_key: bool = True) -> Client:
        if self._client is None:
            try:
                settings = resolve(flag_url=self.api_url, flag_key=self.api_key)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
            if need_key and not settings.api_key:
                raise click.UsageError(
                    "no API key: run `dc login --api-key dck_...` or set DC_API_KEY"
                )
            self._client = Client(settings.api_url, settings.api_key, timeout=self.timeout)
        return self._client


def state() -> State:
    return cast(State, click.get_current_context().find_root().ensure_object(State))


def json_option(func: F) -> F:
    """`--json` on a command: print the API's own JSON shape instead of a table."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_root().ensure_object(State).json = True
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=set_json,
        help="Print the API's JSON (one document) instead of a table.",
    )(func)


class DcGroup(click.Group):
    """Maps the client's errors to exit code 1 with the message on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            render.error(str(exc))
            ctx.exit(EXIT_API_ERROR)
        except TimeoutError as exc:
            render.error(str(exc))
            ctx.exit(EXIT_API_ERROR)


def fail(message: str) -> None:
    """Stop with exit code 1 and `message` on stderr (an outcome the API reported)."""
    render.error(message)
    click.get_current_context().exit(EXIT_API_ERROR)


def key_values(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """`K=V` options into a dict; anything else is a usage error."""
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param=param)
        parsed[key] = value
    return parsed
