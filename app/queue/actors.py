"""How a domain declares an actor: one actor class that can wait for a commit, and one unit of work.

::

    @actor(queue_name="rentals", max_retries=10)
    @unit_of_work
    def stop_rental(session: Session, rental_id: str, reason: str | None = None) -> None: ...

    stop_rental.send_after_commit(session, rental_id=str(rental.id), reason=None)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import dramatiq
from sqlalchemy.orm import Session

from app.db import after_commit, session_scope
from app.queue.broker import broker

P = ParamSpec("P")
R = TypeVar("R")


class Actor(dramatiq.Actor[P, R]):
    """A Dramatiq actor that can be sent once the caller's transaction commits."""

    def send_after_commit(self, session: Session, /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Send the message when `session` commits; nothing is sent if it rolls back."""
        after_commit(session, functools.partial(self.send, *args, **kwargs), name=self.actor_name)

    def send_after_commit_with_delay(
        self, session: Session, delay_ms: int, /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """As :meth:`send_after_commit`, delivered no sooner than `delay_ms` after the commit."""
        after_commit(
            session,
            functools.partial(self.send_with_options, args=args, kwargs=kwargs, delay=delay_ms),
            name=self.actor_name,
        )


def actor(*, queue_name: str, **options: Any) -> Callable[[Callable[P, R]], Actor[P, R]]:
    """Declare an actor on the platform's broker (options: max_retries, time_limit, ...)."""

    def declare(fn: Callable[P, R]) -> Actor[P, R]:
        decorator = dramatiq.actor(
            actor_class=Actor, queue_name=queue_name, broker=broker, **options
        )
        return cast(Actor[P, R], decorator(fn))

    return declare


def unit_of_work(fn: Callable[Concatenate[Session, P], R]) -> Callable[P, R]:
    """Run `fn` with a session of its own: commit when it returns (then its after-commit sends
    go out), roll back when it raises. A send that fails after the commit fails the run, so
    Dramatiq retries it (every actor is idempotent). The message carries the other arguments."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with session_scope(raise_hook_errors=True) as session:
            return fn(session, *args, **kwargs)

    signature = inspect.signature(fn)
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return run
